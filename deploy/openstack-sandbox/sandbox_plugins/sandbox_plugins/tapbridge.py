"""The real sandbox's L2 agent, in one loop: each VM's tap joins the namespace's bridge.

Nova no longer plugs Linux bridges, and no agent runs here: ports are bound as VIF type
``tap`` (Nova's libvirt driver makes the tap), and this puts every ``tap*`` link on the
bridge as soon as ``ip monitor`` reports it (a scan every few seconds catches any missed).
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time


def _enslave(bridge: str) -> None:
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout or "[]")
    for link in links:
        name = link.get("ifname", "")
        if name.startswith("tap") and link.get("master") != bridge:
            subprocess.run(["ip", "link", "set", name, "master", bridge, "up"], capture_output=True)
            print(f"{name} joined {bridge}", flush=True)


def main(bridge: str) -> None:
    monitor = subprocess.Popen(["ip", "monitor", "link"], stdout=subprocess.PIPE, text=True)
    assert monitor.stdout is not None
    last_scan = 0.0
    while True:
        ready, _, _ = select.select([monitor.stdout], [], [], 3.0)
        if ready:
            monitor.stdout.readline()
        if ready or time.monotonic() - last_scan > 3.0:
            _enslave(bridge)
            last_scan = time.monotonic()


if __name__ == "__main__":
    main(sys.argv[1])
