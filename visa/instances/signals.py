"""GPU use and Jupyter kernels in an activity report, read from what the machine printed.

Everything here comes from the machine (its ``nvidia-smi``, its JupyterLab), so it is hostile:
text is read up to a bound, a line that is not exactly what NVIDIA's documented CSV format
gives (``--format=csv,noheader,nounits``) is skipped, numbers are plain decimal digits in
range, and nothing here raises: what cannot be read counts as no activity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MAX_TEXT = 64 * 1024  # characters of one nvidia-smi answer read at most
MAX_LINES = 1024  # GPUs or GPU processes read at most
MAX_KERNELS = 1024
# utilization.gpu (percent of the last sample period a kernel ran on the GPU) that counts as
# computing; a GPU holding a model between two cells reads 0.
GPU_BUSY_PERCENT = 10
NOT_AVAILABLE = "[N/A]"
_NUMBER = re.compile(r"[0-9]{1,9}")


def _lines(text: Any) -> list[str]:
    if not isinstance(text, str):
        return []
    return text[:MAX_TEXT].splitlines()[:MAX_LINES]


def compute_apps(text: Any) -> dict[int, int | None]:
    """``nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits``: one
    ``<pid>, <MiB>`` line per process holding a CUDA context, ``[N/A]`` where the driver cannot
    tell its memory. pid -> MiB (None: not told)."""
    apps: dict[int, int | None] = {}
    for line in _lines(text):
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 2 or not _NUMBER.fullmatch(fields[0]) or int(fields[0]) == 0:
            continue
        if _NUMBER.fullmatch(fields[1]):
            apps[int(fields[0])] = int(fields[1])
        elif fields[1] == NOT_AVAILABLE:
            apps[int(fields[0])] = None
    return apps


def utilization(text: Any) -> tuple[int, ...]:
    """``nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits``: one percentage
    a line, one line per GPU."""
    found = []
    for line in _lines(text):
        value = line.strip()
        if _NUMBER.fullmatch(value) and int(value) <= 100:
            found.append(int(value))
    return tuple(found)


def gpu_busy(apps: dict[int, int | None], percents: tuple[int, ...], owners_pids: set[int]) -> bool:
    """The owner computes on a GPU: a GPU is busy and one of the owner's processes holds a
    context there. Other accounts' processes (another session on a shared host) never count."""
    return any(p >= GPU_BUSY_PERCENT for p in percents) and any(pid in owners_pids for pid in apps)


@dataclass(frozen=True)
class Kernel:
    """One Jupyter kernel: running a cell, and when it last did anything."""

    busy: bool
    last_activity: datetime | None


def kernels(data: Any) -> tuple[Kernel, ...]:
    """jupyter-server's ``GET /api/kernels`` answer: a list of objects whose ``execution_state``
    is ``busy`` while a cell runs and whose ``last_activity`` is an ISO 8601 time (UTC)."""
    if not isinstance(data, list):
        return ()
    found = []
    for item in data[:MAX_KERNELS]:
        if isinstance(item, dict):
            found.append(Kernel(item.get("execution_state") == "busy", _timestamp(item.get("last_activity"))))
    return tuple(found)


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when.astimezone(UTC) if when.tzinfo is not None else None
