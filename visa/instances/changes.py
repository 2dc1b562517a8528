"""A wake-up for this process's event streams when the worker changed an instance's state.

The streams still poll the database (other processes change instances too); this only cuts
their wait short, so that a desktop that just answered reaches the browser at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

_lock = threading.Lock()
_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()


def notify() -> None:
    """Wake every stream waiting in this process (callable from any thread)."""
    with _lock:
        waiters = list(_waiters)
    for loop, event in waiters:
        with contextlib.suppress(RuntimeError):  # its loop is closed
            loop.call_soon_threadsafe(event.set)


async def wait(timeout: float) -> None:
    """Sleep ``timeout`` seconds, or less when :func:`notify` is called meanwhile."""
    entry = (asyncio.get_running_loop(), asyncio.Event())
    with _lock:
        _waiters.add(entry)
    try:
        await asyncio.wait_for(entry[1].wait(), timeout)
    except TimeoutError:
        pass
    finally:
        with _lock:
            _waiters.discard(entry)
