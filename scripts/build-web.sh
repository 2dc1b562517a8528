#!/usr/bin/env bash
# Builds the front-end assets into visa/static/ (served by the package; nothing from a CDN):
# our scripts and styles from web/src/, and noVNC's ES modules from web/node_modules.
# Installs the npm dependencies first (npm ci, from web/package-lock.json) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

novnc=web/node_modules/@novnc/novnc
uplot=web/node_modules/uplot
if [[ ! -f $novnc/core/rfb.js || ! -f $uplot/dist/uPlot.esm.js ]]; then
  command -v npm >/dev/null || { echo "build-web: npm is missing (Debian: apt-get install npm)" >&2; exit 1; }
  npm ci --prefix web --no-audit --no-fund --loglevel=error
fi

out=visa/static
rm -rf "$out/js" "$out/css" "$out/vendor/novnc" "$out/vendor/uplot"
mkdir -p "$out/js" "$out/css" "$out/vendor/novnc/vendor" "$out/vendor/uplot"
cp web/src/js/*.js "$out/js/"
cp web/src/css/*.css "$out/css/"
# noVNC's core imports ../vendor/pako: keep that layout.
cp -R "$novnc/core" "$out/vendor/novnc/core"
cp -R "$novnc/vendor/pako" "$out/vendor/novnc/vendor/pako"
cp "$novnc/LICENSE.txt" "$out/vendor/novnc/LICENSE.txt"
# uPlot (the admin dashboard's usage charts): its ES module and its stylesheet.
cp "$uplot/dist/uPlot.esm.js" "$uplot/dist/uPlot.min.css" "$uplot/LICENSE" "$out/vendor/uplot/"
echo "build-web: assets in $out ($(find "$out" -type f | wc -l) files, noVNC $(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$novnc/package.json"), uPlot $(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$uplot/package.json"))"
