"""Finding the processes a test started, by a variable in their environment (inherited by children)."""

from __future__ import annotations

import os
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
