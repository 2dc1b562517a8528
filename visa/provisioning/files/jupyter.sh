#!/bin/sh
# JupyterLab for the owner (systemd visa-jupyter.service, runs as the owner), served
# under the base URL the gateway proxies. Its token is in the owner-only config file.
set -eu
# shellcheck source=/dev/null
. /etc/visa/instance.env

cd "$VISA_HOME"
exec "$VISA_JUPYTER_COMMAND" --no-browser --ip=0.0.0.0 --port="$VISA_JUPYTER_PORT" \
    --ServerApp.base_url="$VISA_JUPYTER_BASE_URL" --ServerApp.root_dir="$VISA_HOME" \
    --config="$VISA_JUPYTER_CONFIG"
