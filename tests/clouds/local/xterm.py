"""Keys typed into a local session's xterm, as its user types them (XTEST, through the session's
own X server), for the attacks a scientist would type."""

from __future__ import annotations

import time
from pathlib import Path

from visa.clouds.local.provider import LocalProvider

# A shell under the session's xterm: keys typed before it reads its terminal can be lost.
SHELL_READY = (
    "for i in $(seq 300); do x=$(pgrep -d, -x xterm) && [ -n \"$x\" ] && pgrep -P \"$x\" >/dev/null && exit 0; "
    "sleep 0.1; done; exit 1"
)
WHY = "xdotool getactivewindow getwindowname; ps -eo pid,ppid,stat,args"


def _type(provider: LocalProvider, server_id: str, keys: list[str]) -> None:
    typed = provider.exec_in_session(
        server_id,
        ["xdotool", "search", "--sync", "--class", "xterm", "windowactivate", "--sync", "%1", "sleep", "0.5", *keys],
        timeout=60,
    )  # fmt: skip
    assert typed.returncode == 0, typed.stderr


def _wait(path: Path, marker: str, seconds: float) -> str | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if marker in text:
            return text
        time.sleep(0.2)
    return None


def type_line(provider: LocalProvider, server_id: str, line: str, done: Path, marker: str, *,
              timeout: float = 60) -> str:
    """Type ``line`` (and Enter) into the session's xterm, and wait until ``done`` holds
    ``marker``: its text. Under load a window manager can still be moving focus when the keys go:
    a line that left no trace in 30 s is typed once more (after Ctrl-C and Ctrl-U clear what did
    reach the shell), so lines typed here are ones that may run twice."""
    ready = provider.exec_in_session(server_id, ["sh", "-c", SHELL_READY], timeout=60)
    assert ready.returncode == 0, "no shell under the session's xterm in 30 s"
    _type(provider, server_id, ["type", "--delay", "2", line + "\n"])
    text = _wait(done, marker, 30)
    if text is None:
        _type(provider, server_id, ["key", "ctrl+c", "ctrl+u", "type", "--delay", "2", line + "\n"])
        text = _wait(done, marker, timeout)
    if text is None:
        why = provider.exec_in_session(server_id, ["sh", "-c", WHY], timeout=30)
        raise AssertionError(f"the line typed into the xterm never ran ({done} has no {marker!r}); "
                             f"active window and processes:\n{why.stdout.decode(errors='replace')}")
    return text
