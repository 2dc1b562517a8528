"""The desktop's video path in a real headless Chromium against a real visa and a real local
desktop (the video proxy in the session, in front of Xtigervnc; the gateway in between).

While a picture moves in the desktop (bench/framesource.py's rotating volume, run inside the
session), the page reports that it decodes H.264; once the screen stops changing, the canvas
the page painted equals the X server's framebuffer pixel for pixel: what was sent lossy is
sent again losslessly.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.browser import ROOT, Site, chromium, cli, local_site
from tests.web.test_browser import create_desktop, login, shot

pytestmark = pytest.mark.integration

# The painted canvas as 8-bit RGB, hashed in the page (4 MB of pixels never cross to the test).
CANVAS_DIGEST = """async () => {
  const c = document.querySelector('#screen canvas');
  if (!c || !c.width) return null;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const rgb = new Uint8Array(c.width * c.height * 3);
  for (let i = 0, j = 0; i < d.length; i += 4, j += 3) {
    rgb[j] = d[i]; rgb[j + 1] = d[i + 1]; rgb[j + 2] = d[i + 2];
  }
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', rgb));
  return {width: c.width, height: c.height, digest: Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('')};
}"""

CANVAS_RGB = """() => {
  const c = document.querySelector('#screen canvas');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const out = [];
  for (let i = 0; i < d.length; i += 4) out.push(d[i], d[i + 1], d[i + 2]);
  return out;
}"""

# The X server's framebuffer, read inside the session by the frame source's own grab (XGetImage).
GRAB = """
import sys
sys.path.insert(0, sys.argv[1])
import framesource
sys.stdout.buffer.write(framesource.grab(0, 0, int(sys.argv[2]), int(sys.argv[3])).tobytes())
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    def people(env: dict[str, str]) -> None:
        cli(env, "users", "add", "alice", "--full-name", "Alice Martin", "--password", "alice-password")

    with local_site(tmp_path_factory.mktemp("visa-video") / "var", "desktop-video-secret", [
        {"id": "ev280-id21-1", "proposal": "ev280", "proposal_title": "Trace elements in Roman glass",
         "instrument": "id21", "start_date": "2026-11-20", "end_date": "2026-11-23", "title": "XRF mapping",
         "members": [{"username": "alice", "full_name": "Alice Martin"}]},
    ], dirs=("visitor/ev280/id21", "processed/ev280/id21"), people=people) as s:  # fmt: skip
        yield s


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    with chromium() as b:
        yield b


class Session:
    """Commands run inside the running desktop session, as its own programs run."""

    def __init__(self, site: Site) -> None:
        from visa.clouds.registry import make_provider

        self.provider = make_provider("local", "local", {"root_dir": str(site.data_dir / "local-instances")})
        [server] = self.provider.list_servers()
        self.server = server.id

    def run(self, argv: list[str], input: bytes | None = None, max_output: int = 1 << 20) -> bytes:
        out = self.provider.exec_in_session(self.server, argv, input=input, max_output=max_output)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def sh(self, script: str, input: bytes | None = None) -> str:
        return self.run(["sh", "-c", script], input=input).decode()

    def framebuffer(self, width: int, height: int) -> np.ndarray:
        data = self.run([sys.executable, "-I", "-c", GRAB, "/tmp/visa-video-test", str(width), str(height)],
                        max_output=width * height * 3 + 1)  # fmt: skip
        return np.frombuffer(data, np.uint8).reshape(height, width, 3)


def test_moving_pictures_go_as_h264_and_text_at_rest_is_exact(site: Site, browser: Any) -> None:
    ctx, page = login(browser, site, "alice")
    uid = create_desktop(page, "moving pictures")
    session = Session(site)
    try:
        page.goto(f"/instances/{uid}/desktop")
        page.wait_for_selector('body[data-desktop="connected"]', state="attached", timeout=30_000)
        # This Chromium decodes H.264 (WebCodecs, on a secure origin), so noVNC offers it.
        assert page.get_attribute("body", "data-video") == "h264"
        page.wait_for_selector("body[data-encoding]", state="attached", timeout=15_000)
        # The pointer is the browser's (its shape drawn by the page, not in the picture): a
        # pointer the owner never moved the VNC server draws into the picture itself.
        box = page.locator("#screen canvas").bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] - 8, box["y"] + box["height"] - 8)

        # A rotating volume at 30 frames a second, in the session (its own X client, MIT-SHM).
        session.sh("mkdir -p /tmp/visa-video-test && cat > /tmp/visa-video-test/framesource.py",
                   input=(ROOT / "bench" / "framesource.py").read_bytes())  # fmt: skip
        pid = session.sh(
            f"cd /tmp/visa-video-test && {sys.executable} -I framesource.py volume count --frames 8 "
            ">log 2>&1 & echo $!"
        ).strip()
        page.wait_for_selector('body[data-encoding="H.264"]', state="attached", timeout=20_000)
        shot(page, "video-01-moving")

        # The picture stops (the program paused, its last frame left on the screen).
        session.sh(f"kill -STOP {pid}")
        stopped = time.monotonic()
        canvas = page.evaluate(CANVAS_DIGEST)
        assert canvas is not None
        width, height = canvas["width"], canvas["height"]
        expected = hashlib.sha256(session.framebuffer(width, height).tobytes()).hexdigest()
        painted = canvas
        while painted["digest"] != expected and time.monotonic() - stopped < 15:
            time.sleep(0.05)
            painted = page.evaluate(CANVAS_DIGEST)
        exact_after = time.monotonic() - stopped
        if painted["digest"] != expected:
            shown = np.array(page.evaluate(CANVAS_RGB), np.uint8).reshape(height, width, 3)
            differ = np.argwhere((shown != session.framebuffer(width, height)).any(axis=-1))
            queue = page.evaluate("window.visaDesktop.rfb._display._renderQ.map((a) => a.type + (a.frame ? ':' + a.frame.ready : ''))")
            log = session.sh("tail -c 3000 /tmp/visa-video-test/log; true")
            pytest.fail(f"the canvas differs from the framebuffer in {len(differ)} pixels, "
                        f"from {differ.min(axis=0)} to {differ.max(axis=0)}; render queue {queue[:20]} {len(queue)}; "
                        f"encoding {page.get_attribute('body', 'data-encoding')}; {log}")  # fmt: skip
        print(f"exact {exact_after:.2f} s after the picture stopped")
        page.wait_for_selector('body:not([data-encoding="H.264"])', state="attached", timeout=10_000)
        shot(page, "video-02-at-rest")
        session.sh(f"kill -CONT {pid}; kill {pid}")
    finally:
        session.provider.close()
        ctx.close()

