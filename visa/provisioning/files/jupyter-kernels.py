#!/usr/bin/python3
"""The owner's Jupyter kernels, for the activity probe: JupyterLab's ``GET /api/kernels``
(each kernel's ``execution_state`` and ``last_activity``), printed as it answered.

Runs as the owner (the probe account may run this, and only this and x-idle, as the owner:
sudoers rule written by cloud-init), since the token is in the owner's config file.
"""

import json
import sys
import urllib.request

ENV_FILE = "/etc/visa/instance.env"
MAX_BYTES = 128 * 1024


def read_env() -> dict:
    env = {}
    with open(ENV_FILE) as fh:
        for line in fh:
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                env[key] = value
    return env


ENV = read_env()
if not ENV.get("VISA_JUPYTER_PORT"):
    sys.exit(1)
with open(ENV["VISA_JUPYTER_CONFIG"]) as fh:
    token = json.load(fh)["IdentityProvider"]["token"]
url = f"http://127.0.0.1:{ENV['VISA_JUPYTER_PORT']}{ENV['VISA_JUPYTER_BASE_URL']}api/kernels"
request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
with urllib.request.urlopen(request, timeout=5) as answer:
    sys.stdout.write(answer.read(MAX_BYTES).decode(errors="replace"))
