#!/usr/bin/env bash
# Copies what the admin pages and the API documentation serve into visa/static/ (no CDN):
# the admin scripts and styles from web/src/admin/, and Swagger UI from the npm registry
# (web/apidocs/package-lock.json, installed with npm ci when missing) for /api/docs.
set -euo pipefail
cd "$(dirname "$0")/.."

swagger=web/apidocs/node_modules/swagger-ui-dist
if [[ ! -f $swagger/swagger-ui-bundle.js ]]; then
  if command -v npm >/dev/null; then
    # --ignore-scripts: swagger-ui-dist pulls a telemetry package whose install script calls home.
    SCARF_ANALYTICS=false npm ci --prefix web/apidocs --ignore-scripts --no-audit --no-fund --loglevel=error
  else
    echo "build-apidocs: npm is missing: /api/docs falls back to its plain list of operations" >&2
  fi
fi

out=visa/static
rm -rf "$out/admin" "$out/vendor/swagger-ui"
mkdir -p "$out/admin"
cp web/src/admin/*.js web/src/admin/*.css "$out/admin/"
if [[ -f $swagger/swagger-ui-bundle.js ]]; then
  mkdir -p "$out/vendor/swagger-ui"
  cp "$swagger/swagger-ui-bundle.js" "$swagger/swagger-ui.css" "$swagger/LICENSE" "$out/vendor/swagger-ui/"
fi
echo "build-apidocs: admin assets and Swagger UI in $out"
