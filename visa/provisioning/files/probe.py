#!/usr/bin/python3
"""Activity report for the scheduler: the probe account's only command (forced by its key).

Prints one JSON object: the owner's X idle time, the load average, the CPU count, the
owner's processes with their CPU time, what ``nvidia-smi`` says of the GPUs and their
processes (as it printed it: visa reads it), and the owner's Jupyter kernels. Nothing else
can be run with the probe key.
"""

import json
import os
import pwd
import subprocess
import sys

ENV_FILE = "/etc/visa/instance.env"
ALLOWED = {"", "visa-probe"}
NVIDIA_SMI = "/usr/bin/nvidia-smi"
MAX_TEXT = 64 * 1024  # characters of each answer passed on


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


def nvidia_smi(query: str) -> str:
    try:
        out = subprocess.run(
            [NVIDIA_SMI, query, "--format=csv,noheader,nounits"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout[:MAX_TEXT].decode(errors="replace") if out.returncode == 0 else ""


def gpu() -> "dict | None":
    if not os.access(NVIDIA_SMI, os.X_OK):
        return None
    return {
        "apps": nvidia_smi("--query-compute-apps=pid,used_memory"),
        "utilization": nvidia_smi("--query-gpu=utilization.gpu"),
    }


def kernels() -> "list | None":
    try:
        out = subprocess.run(
            ["sudo", "-n", "-u", OWNER, "/usr/local/libexec/visa/jupyter-kernels"],
            capture_output=True,
            timeout=10,
            check=True,
        ).stdout
        found = json.loads(out[:MAX_TEXT * 2])
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return found if isinstance(found, list) else None


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
    "gpu": gpu(),
    "kernels": kernels() if ENV.get("VISA_JUPYTER_PORT") else None,
}
json.dump(report, sys.stdout)
sys.stdout.write("\n")
