#!/usr/bin/python3
"""Activity report for the scheduler: the probe account's only command (forced by its key).

Prints one JSON object: the owner's X idle time, the load average, the CPU count and
the owner's processes with their CPU time. Nothing else can be run with the probe key.
"""

import json
import os
import pwd
import subprocess
import sys

ENV_FILE = "/etc/visa/instance.env"
ALLOWED = {"", "visa-probe"}


def read_env() -> dict:
    env = {}
    with open(ENV_FILE) as fh:
        for line in fh:
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                env[key] = value
    return env


def x_idle_ms() -> "int | None":
    try:
        out = subprocess.run(
            ["sudo", "-n", "-u", OWNER, "/usr/local/libexec/visa/x-idle"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        return int(out.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def processes(uid: int) -> list:
    tick = os.sysconf("SC_CLK_TCK")
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / tick
        found.append({"pid": int(pid), "command": name, "cpu_seconds": round(cpu, 2)})
    return found


if os.environ.get("SSH_ORIGINAL_COMMAND", "").strip() not in ALLOWED:
    sys.stderr.write("only visa-probe may be run with this key\n")
    sys.exit(1)

ENV = read_env()
OWNER = ENV["VISA_OWNER"]
with open("/proc/loadavg") as fh:
    load = [float(v) for v in fh.read().split()[:3]]
report = {
    "owner": OWNER,
    "x_idle_ms": x_idle_ms() if ENV.get("VISA_VNC_PORT") else None,
    "load": load,
    "cpu_count": os.cpu_count(),
    "processes": processes(pwd.getpwnam(OWNER).pw_uid),
}
json.dump(report, sys.stdout)
sys.stdout.write("\n")
