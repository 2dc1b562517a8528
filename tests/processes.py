"""The processes a test starts: a free loopback port for one, waiting until it answers there, and
finding them again by a variable in their environment (inherited by children)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def pids_with_env(match: Callable[[bytes], bool]) -> list[int]:
    """Pids of the processes with an environment entry (``NAME=value`` bytes) that ``match`` accepts."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        if any(match(item) for item in env):
            found.append(int(entry.name))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    """Wait until something accepts connections on the loopback port (``proc`` exiting first fails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing answers on port {port}")


def delete_local_sessions(data_dir: Path) -> None:
    """Whatever a test left running on the local cloud under ``data_dir`` is stopped and removed."""
    from visa.clouds.registry import make_provider

    root = data_dir / "local-instances"
    if not root.exists():
        return
    provider = make_provider("local", "local", {"root_dir": str(root)})
    try:
        for server in provider.list_servers():
            provider.delete(server.id)
    finally:
        provider.close()
