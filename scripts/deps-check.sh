#!/usr/bin/env bash
# Tries the newest versions pyproject allows (requirements.lock ignored) in a throwaway virtualenv:
# reports each version that differs from the lock and runs a quick subset of the unit tests with them.
# Exit status: that of the tests. Usage: scripts/deps-check.sh [pytest args replacing the subset]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
tmp=$(mktemp -d -t visa-deps-check.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# The project's requirements, server and test extras (the local cloud's JupyterLab is exercised by
# the real-session tests, not by this subset); the project itself is imported from the tree.
"$PY" - > "$tmp/requirements.txt" <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
print("\n".join(project["dependencies"] + extras["test"] + extras["deploy"]))
PY
"$PY" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q --upgrade pip
"$tmp/venv/bin/pip" install -q --upgrade -r "$tmp/requirements.txt"

echo "deps-check: newest allowed versions that differ from requirements.lock:"
"$tmp/venv/bin/python" - <<'PY'
from importlib import metadata
from packaging.utils import canonicalize_name
locked = {}
for line in open("requirements.lock"):
    line = line.split("#", 1)[0].strip()
    if line:
        name, _, version = line.partition("==")
        locked[canonicalize_name(name)] = version
changed = 0
for dist in sorted(metadata.distributions(), key=lambda d: canonicalize_name(d.metadata["Name"])):
    name = canonicalize_name(dist.metadata["Name"])
    if name in {"pip", "setuptools"} or locked.get(name) == dist.version:
        continue
    changed += 1
    print(f"  {name}: {locked.get(name, '(not locked)')} -> {dist.version}")
print(f"deps-check: {changed} changed" if changed else "  none")
PY

# Every module imports: a library's moved internals (uvicorn's protocols, gunicorn's workers) show here.
echo "deps-check: importing every module"
PYTHONPATH=$PWD "$tmp/venv/bin/python" - <<'PY'
import importlib
import pkgutil
import sys

import visa

bad = []
for mod in pkgutil.walk_packages(visa.__path__, "visa."):
    if not mod.name.startswith("visa.migrations"):  # Alembic's scripts run only under Alembic
        try:
            importlib.import_module(mod.name)
        except Exception as exc:
            bad.append(f"  {mod.name}: {exc!r}")
if bad:
    sys.exit("deps-check: modules that no longer import:\n" + "\n".join(bad))
PY

# A minute's worth of tests with no server: the policy, the settings, the OpenStack provider's mapping.
subset=(tests/test_dependencies.py tests/test_layers.py tests/policy tests/clouds/test_openstack_mapping.py
        tests/settings)
if (($#)); then subset=("$@"); fi
echo "deps-check: pytest ${subset[*]}"
PYTHONPATH=$PWD "$tmp/venv/bin/python" -m pytest -q -p no:cacheprovider -m "not integration" "${subset[@]}"
