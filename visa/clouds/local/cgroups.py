"""A session's cgroups (v2, else v1's memory, cpu and pids controllers) under ``<cgroup_root>``:
the flavour's memory and cores and a bound on its processes. The supervisor starts the
sandbox in them, and every command run in the session joins them."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def problem(cgroup_root: str) -> str | None:
    """None when visa can make a session's cgroups and set its limits, else why not."""
    base = Path(cgroup_root)
    if (base / "cgroup.controllers").exists():  # v2
        controllers = set((base / "cgroup.controllers").read_text().split())
        if not {"memory", "cpu", "pids"} <= controllers:
            return f"cgroup v2 at {base} lacks {sorted({'memory', 'cpu', 'pids'} - controllers)}"
        parent = base / "visa"
    else:
        for controller in ("memory", "cpu", "pids"):
            if not (base / controller / "cgroup.procs").exists():
                return f"no cgroup v1 {controller} controller under {base}"
        parent = base / "memory" / "visa"
    try:
        parent.mkdir(exist_ok=True)
    except OSError as exc:
        return f"cannot create {parent}: {exc.strerror}"
    if not os.access(parent, os.W_OK):
        return f"{parent} is not writable"
    return None


def dirs(cgroup_root: str, server_id: str) -> list[Path]:
    """The session's cgroup directories: one (v2) or one per controller (v1)."""
    base = Path(cgroup_root)
    if (base / "cgroup.controllers").exists():
        return [base / "visa" / server_id]
    return [base / controller / "visa" / server_id for controller in ("memory", "cpu", "pids")]


def make(cgroup_root: str, server_id: str, *, cores: int, memory_mb: int, pids_max: int) -> list[str]:
    """The session's cgroups with the flavour's limits; the supervisor starts bwrap in them."""
    made = dirs(cgroup_root, server_id)
    memory = memory_mb * 1024 * 1024
    period = 100_000
    quota = max(1, cores) * period
    v2 = len(made) == 1
    if v2:
        parent = made[0].parent
        parent.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):
            (parent / "cgroup.subtree_control").write_text("+memory +cpu +pids")
    for cgroup in made:
        cgroup.parent.mkdir(exist_ok=True)
        cgroup.mkdir(exist_ok=True)
    if v2:
        (made[0] / "memory.max").write_text(str(memory))
        with contextlib.suppress(OSError):
            (made[0] / "memory.swap.max").write_text("0")
        (made[0] / "cpu.max").write_text(f"{quota} {period}")
        (made[0] / "pids.max").write_text(str(pids_max))
    else:
        mem, cpu, pid = made
        (mem / "memory.limit_in_bytes").write_text(str(memory))
        with contextlib.suppress(OSError):  # only when swap accounting is on
            (mem / "memory.memsw.limit_in_bytes").write_text(str(memory))
        (cpu / "cpu.cfs_period_us").write_text(str(period))
        (cpu / "cpu.cfs_quota_us").write_text(str(quota))
        (pid / "pids.max").write_text(str(pids_max))
    return [str(d) for d in made]


def remove(cgroup_root: str, server_id: str) -> None:
    """Kill whatever is left in the session's cgroups, then remove them."""
    for cgroup in dirs(cgroup_root, server_id):
        _kill_all(cgroup)
        with contextlib.suppress(OSError):
            cgroup.rmdir()


def _kill_all(cgroup: Path) -> None:
    try:
        pids = [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            if not (cgroup / "cgroup.procs").read_text().strip():
                return
        except OSError:
            return
        time.sleep(0.02)
