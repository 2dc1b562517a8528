#!/bin/sh
# The image's default command: the web (VISA_ROLE unset or "web": `visa web`, pages and REST
# API as WSGI under gunicorn's threaded workers) or the gateway ("gateway": desktops, instance
# hosts and event streams, gunicorn with uvicorn-worker's class and the relay's websocket protocol).
set -eu
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
visa check-config
case "${VISA_ROLE:-web}" in
  web) exec visa web --workers "${VISA_WORKERS:-2}" --threads "${VISA_THREADS:-8}" --bind 0.0.0.0:8080 \
         --graceful-timeout 30 --forwarded-allow-ips '*' ;;
  gateway) exec gunicorn -k visa.serving.RelayUvicornWorker --workers "${VISA_WORKERS:-1}" --bind 0.0.0.0:8081 \
         --graceful-timeout 5 --forwarded-allow-ips '*' 'visa.asgi:create_gateway_app()' ;;
  *) echo "VISA_ROLE must be web or gateway, not ${VISA_ROLE}" >&2; exit 2 ;;
esac
