"""TigerVNC server options for visa's desktops, in one place: the local cloud's Xtigervnc and
the images' desktop configuration take them from here. Why each value: docs/desktop-performance.md
(measured with ``python -m bench.desktop``)."""

from __future__ import annotations

TUNED_TIGERVNC_OPTIONS: dict[str, str] = {
    "FrameRate": "60",
    "CompareFB": "2",
    "ZlibLevel": "-1",
}


def tigervnc_args() -> list[str]:
    """The options as Xtigervnc/Xvnc command-line arguments."""
    return [f"-{name}={value}" for name, value in TUNED_TIGERVNC_OPTIONS.items()]
