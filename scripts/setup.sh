#!/usr/bin/env bash
# Sets up a fresh machine for visa: Debian packages, the virtualenv, front-end assets.
# Idempotent: a second run only checks. Usage: scripts/setup.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

missing=()
while read -r pkg; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < deploy/system-packages.txt
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages (run as root or: sudo apt-get install ${missing[*]})" >&2
  fi
fi

if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.visa-installed
# requirements.lock (scripts/lock.py) holds the versions the suite passes with: a new release of a
# dependency reaches a fresh clone only through the lock (`make deps-check` tries the newest ones).
if [[ ! -f $stamp || pyproject.toml -nt $stamp || requirements.lock -nt $stamp ]]; then
  .venv/bin/pip install -q --upgrade pip
  if [[ "${1:-}" == "--dev" ]]; then
    .venv/bin/pip install -q -c requirements.lock -e '.[test,local,docs]'
  else
    .venv/bin/pip install -q -c requirements.lock -e '.[local]'  # the demo's local cloud serves JupyterLab sessions
  fi
  touch $stamp
fi

if [[ -x scripts/build-web.sh ]]; then
  scripts/build-web.sh
fi
scripts/build-apidocs.sh  # admin pages' assets and Swagger UI for /api/docs

# axe-core, which the browser tests run on every page they visit (WCAG 2.1 AA).
if [[ ! -d tests/a11y/node_modules ]] && command -v npm >/dev/null 2>&1; then
  npm ci --prefix tests/a11y --no-audit --no-fund
fi

# The OIDC server the login tests start (npm oidc-provider, Keycloak's URL layout).
if [[ ! -d tests/oidc/node_modules ]] && command -v npm >/dev/null 2>&1; then
  npm ci --prefix tests/oidc --no-audit --no-fund
fi
