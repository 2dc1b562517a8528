"""The desktop benchmark's frame source: what it puts in the X server's framebuffer is frame
after frame, each exactly the picture its marker names, and the marker survives what a codec
does to it. Its rate is read from the framebuffer (distinct numbers seen), never timed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench import framesource
from bench.framesource import HEIGHT, WIDTH, grab, mark, read_marker, rgb, shown
from tests.browser import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture
def display():
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{WIDTH}x{HEIGHT}x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        name = f":{f.readline().strip()}"
    yield name
    xvfb.terminate()
    xvfb.wait(timeout=10)


@pytest.mark.parametrize("kind", framesource.KINDS)
def test_the_framebuffer_shows_numbered_frames_one_after_another(display: str, kind: str, tmp_path: Path) -> None:
    count = tmp_path / "count"
    frames = 6  # a short loop: the test pre-renders little
    source = subprocess.Popen(
        [sys.executable, "-m", "bench.framesource", kind, str(count), "--frames", str(frames)],
        cwd=ROOT, env={**os.environ, "DISPLAY": display}, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        seen: list[int] = []
        deadline = time.monotonic() + 60
        while len(seen) < 5 and time.monotonic() < deadline:
            assert source.poll() is None, source.stderr.read() if source.stderr else ""
            try:
                image = grab(0, 0, WIDTH, HEIGHT, display)
            except RuntimeError:  # the display is not up yet
                time.sleep(0.2)
                continue
            n = read_marker(image)
            if n is not None and (not seen or n != seen[-1]):
                # The X server holds exactly frame n: its picture and its number.
                assert np.array_equal(image, rgb(shown(kind, n, frames))), n
                seen.append(n)
            time.sleep(0.1)
        assert len(seen) == 5, seen
        assert seen == sorted(seen), seen  # frames come in order, each one new
        # What it reports (every tenth frame): the frames shown so far, soon past the last seen.
        while int((count.read_text().split() or ["", "0"])[1]) < seen[-1] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert int(count.read_text().split()[1]) >= seen[-1] >= 4
    finally:
        source.terminate()
        source.wait(timeout=10)
    assert source.returncode == 0


def test_a_marker_reads_through_noise_and_a_torn_one_does_not() -> None:
    pixels = framesource.frame("detector", 0, 4)
    mark(pixels, 0xBEEF)
    image = rgb(pixels).astype(np.int32)
    rng = np.random.default_rng(0)
    noisy = np.clip(image + rng.integers(-60, 60, image.shape), 0, 255).astype(np.uint8)
    assert read_marker(noisy) == 0xBEEF  # a lossy codec's worth of error
    torn = rgb(pixels)
    other = framesource.frame("detector", 0, 4)
    mark(other, 0xBEEE)
    torn[framesource.CELL :] = rgb(other)[framesource.CELL :]  # top from one frame, bottom from the next
    assert read_marker(torn) is None
