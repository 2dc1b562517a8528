"""Runs every benchmark in turn: ``python -m bench [NAME ...]`` (``make bench``).

Each prints its figures side by side with the peer or the reference's way it is compared to.
Names: gateway, desktop, desktop_load, lifecycle, api_latency, usage_report, reconnect, transfer,
sync_calls (the last needs the OpenStack sandbox: deploy/openstack-sandbox/sandbox.sh start).
"""

from __future__ import annotations

import subprocess
import sys

BENCHES = {
    "gateway": [],
    "desktop": [],
    "desktop_load": [],
    "lifecycle": [],
    "api_latency": [],
    "usage_report": [],
    "reconnect": [],
    "transfer": [],
    "sync_calls": ["--sizes", "100", "--extrapolate", "1000,5000"],
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        print(f"\n=== bench.{name} ===", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.{name}", *BENCHES[name]], check=False).returncode:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
