"""The desktop over a real network: input-to-pixel latency, moving pictures and bytes on the wire.

    python -m bench.desktop [--quick] [--profiles lan,wifi,home,poor] [--baseline-ref REF]

A real desktop (Xtigervnc + openbox, xterms, frame sources of bench/framesource.py) is watched
by noVNC in headless Chromium through a link shaper (bench/shaper.py) with the profiles of
``bench.shaper.PROFILES``. Three peers, interleaved in one run (each profile runs every peer
in turn, the order rotating), against the same X server:

* ``field default``: websockify + noVNC as Open OnDemand ships it (quality 2, compression
  6, the client doing VncAuth), TigerVNC's default options;
* ``visa as it is``: the gateway and the desktop page's link adaptation of ``--baseline-ref``
  (visa/ and web/src/js/desktop-link.js extracted from git);
* ``visa, video proxy``: this tree's gateway, the link adaptation, and the video proxy
  (visa/clouds/local/videoproxy.py) in front of the VNC server, as a session would run it.

Workloads, on one connection per peer and profile:

* ``typing``: a key press in an idle xterm until the echo is painted in the page's canvas
  (timed in the page: a keydown listener and a hook on noVNC's display flip);
* ``scroll``: ``seq 10000`` in the xterm: Enter until the last update is painted;
* ``drag``: a window dragged by its title bar, each mouse step until the moved window is painted;
* ``volume`` and ``detector``: pre-rendered frames at 30 fps (1024x768, through MIT-SHM, each
  with its number in a marker): distinct frame numbers painted per second, the source's own
  rate beside it (a row whose source fell below 28 fps is marked and not counted), and the
  SSIM of painted frames against the server's frame of the same number; typing while the
  volume runs.

Bytes per second are counted by the shaper (both directions); CPU from /proc: the gateway's
side is the relay's processes (websockify's forks included), the instance's side the VNC
server and, for the video peer, its proxy. With ``BENCH_SHOTS=DIR`` the page is photographed
before and after each peer's workloads.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from bench import framesource
from bench.gateway import PASSWORD, _children, prepare_database
from bench.shaper import PROFILES, Profile, ShaperProcess
from tests.processes import free_port, wait_port

ROOT = Path(__file__).resolve().parents[1]
WEB = Path(__file__).with_name("desktop_web")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
WIDTH, HEIGHT = 1280, 1080
BASELINE_REF = "b3c20b6"  # visa before the moving pictures' work (the last landed commit before it)
FRAMES = 60  # pictures in a frame source's loop (2 s at 30 fps)
ANIMATION_AT = (246, 0)  # where the source's window goes: right of the typing terminal
SSIM_SHOTS = 3  # painted frames compared with the server's per source
MIN_SOURCE_FPS = 28  # a source below this rate measured the machine: its row is marked, not counted

# ---------------------------------------------------------------- the desktop


class Desktop:
    """Xtigervnc with openbox and the workloads' windows, on a display of its own."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.procs: list[subprocess.Popen] = []
        passwd = tmp / "vncpasswd"
        passwd.write_bytes(
            subprocess.run(
                ["vncpasswd", "-f"], input=PASSWORD.encode(), capture_output=True, check=True
            ).stdout
        )
        read_fd, write_fd = os.pipe()
        self.xvnc = self._spawn(
            ["Xtigervnc", "-displayfd", str(write_fd), "-geometry", f"{WIDTH}x{HEIGHT}", "-depth", "24",
             "-rfbport", str(self.port), "-interface", "127.0.0.1", "-localhost=1",
             "-SecurityTypes", "VncAuth", "-PasswordFile", str(passwd), "-AlwaysShared=1",
             "-nolisten", "tcp", "-desktop", "bench",
             # So the bench can switch server options between peers (vncconfig -set).
             "-AllowOverride=desktop,FrameRate,CompareFB,ZlibLevel"],
            pass_fds=(write_fd,),
        )  # fmt: skip
        os.close(write_fd)
        with os.fdopen(read_fd) as f:
            self.display = f":{f.readline().strip()}"
        self.env = {**os.environ, "DISPLAY": self.display}
        wait_port(self.port, self.xvnc)
        subprocess.run(["xsetroot", "-solid", "#2f4f6f"], env=self.env, check=False)
        self._spawn(["openbox"])
        time.sleep(0.5)
        # The typing/scrolling terminal (fixed font, no blinking cursor: idle means no updates).
        self._spawn(["xterm", "-geometry", "28x40+10+40", "-fa", "Monospace", "-fs", "10", "+bc", "-T", "typing",
                     "-e", "bash", "--norc", "--noprofile"])  # fmt: skip
        self._spawn(["xterm", "-geometry", "50x16+880+600", "-T", "drag", "-bg", "#fdf6e3"])
        time.sleep(1.5)
        self.typing_window = self._window("typing")
        self.drag_window = self._window("drag")

    def _spawn(self, argv: list[str], **kw) -> subprocess.Popen:
        proc = subprocess.Popen(
            argv, env=getattr(self, "env", None), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, **kw,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def xdo(self, *args: str) -> str:
        r = subprocess.run(["xdotool", *args], env=self.env, capture_output=True, text=True, timeout=20)
        return r.stdout.strip()

    def _window(self, title: str) -> str:
        for _ in range(50):
            found = self.xdo("search", "--name", f"^{title}$").split()
            if found:
                return found[0]
            time.sleep(0.2)
        raise RuntimeError(f"no window {title!r}")

    def set_options(self, options: dict[str, str]) -> None:
        for name, value in options.items():
            subprocess.run(["vncconfig", "-display", self.display, "-set", f"{name}={value}"], env=self.env,
                           capture_output=True, timeout=10, check=True)  # fmt: skip

    def reset_terminal(self) -> None:
        self.xdo("windowactivate", "--sync", self.typing_window)
        self.xdo("type", "--delay", "1", "clear\n")
        time.sleep(0.3)

    def place_drag_window(self) -> tuple[int, int]:
        self.xdo("windowmove", "--sync", self.drag_window, "880", "600")
        self.xdo("windowactivate", "--sync", self.typing_window)
        time.sleep(0.3)
        return 880, 600

    def start_animation(self, kind: str, count_file: Path) -> subprocess.Popen:
        env = {**self.env, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.framesource", kind, str(count_file), "--frames", str(FRAMES)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ---------------------------------------------------------------- relays


def serve_gateway(database_url: str, data_dir: str, port: int, base_url: str) -> None:
    """The gateway as visa.asgi assembles it, plus the benchmark page at /bench/."""
    import uvicorn
    from a2wsgi import WSGIMiddleware
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    from visa.gateway.routes import gateway_routes
    from visa.settings import Settings
    from visa.web.app import create_app

    settings = Settings(
        data_dir=Path(data_dir), database_url=database_url, secret_key="bench-secret", base_url=base_url
    )
    app = create_app(settings)
    web = Path(data_dir) / "web"
    asgi = Starlette(
        routes=[
            *gateway_routes(app),
            Mount("/bench", app=StaticFiles(directory=web)),
            Mount("/", app=WSGIMiddleware(app, workers=4)),
        ]
    )
    ws = "visa.gateway.wsprotocol:RelayWebSocketProtocol"
    try:
        import visa.gateway.wsprotocol  # noqa: F401
    except ImportError:  # an older tree
        ws = "auto"
    print(f"gateway from {sys.modules['visa'].__file__}", file=sys.stderr, flush=True)
    uvicorn.run(
        asgi,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        ws_per_message_deflate=False,
        ws=ws,
    )


@dataclass
class Peer:
    name: str
    port: int  # where the relay listens (the shaper forwards there)
    page: str  # path of the page, with its query string but no path/token
    pids: object  # () -> list[int]: the relay's processes (the gateway's side)
    instance_pids: object  # () -> list[int]: the desktop's encoder (the instance's side)
    server_options: dict[str, str]
    tokens: list[str] = field(default_factory=list)
    ws_path: str = "/websockify"

    def url(self, port: int) -> str:
        path = self.ws_path
        if self.tokens:
            path += f"?token={self.tokens.pop()}"
        from urllib.parse import quote

        return f"http://127.0.0.1:{port}{self.page}&path={quote(path)}"


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(parts[11]) + int(parts[12])
    return total / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- measures


@dataclass
class Phase:
    latencies: list[float] = field(default_factory=list)  # ms
    seconds: float = 0.0
    bytes: int = 0
    cpu: float = 0.0
    instance_cpu: float = 0.0
    fps: float | None = None
    app_fps: float | None = None
    ssim: float | None = None
    done_s: float | None = None


class Meter:
    """Bytes at the shaper and CPU of the relay over one phase."""

    def __init__(self, shaper: ShaperProcess, peer: Peer) -> None:
        self.shaper, self.peer = shaper, peer

    def __enter__(self) -> Meter:
        self.t0 = time.monotonic()
        self.b0 = sum(self.shaper.bytes)
        self.pids = self.peer.pids()
        self.c0 = _cpu_seconds(self.pids)
        self.ipids = self.peer.instance_pids()
        self.i0 = _cpu_seconds(self.ipids)
        return self

    def finish(self, phase: Phase) -> None:
        phase.seconds = time.monotonic() - self.t0
        phase.bytes = sum(self.shaper.bytes) - self.b0
        pids = sorted(set(self.pids) | set(self.peer.pids()))
        phase.cpu = _cpu_seconds(pids) - self.c0
        phase.instance_cpu = _cpu_seconds(self.ipids) - self.i0

    def __exit__(self, *exc: object) -> None:
        pass


async def _flips(page) -> int:
    return await page.evaluate("bench.flips.length")


async def _quiet(page, ms: float = 400, limit: float = 30) -> float:
    """Waits until no update was painted for ``ms``; returns the page time of the last."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        last, now = await page.evaluate("[bench.flips.length ? bench.flips.at(-1)[0] : 0, performance.now()]")
        if now - last >= ms:
            return float(last)
        await asyncio.sleep(0.05)
    return float(last)


async def _input_to_pixel(page, act, timeout: float = 3.0) -> float | None:
    """Performs ``act`` (one input) and times it to the first update painted after it."""
    n_inputs = await page.evaluate("bench.inputs.length")
    n_flips = await _flips(page)
    await act()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await page.evaluate(
            f"""(() => {{ const i = bench.inputs[{n_inputs}]; if (!i) return null;
                const f = bench.flips.slice({n_flips}).find((f) => f[0] >= i[0]);
                return f ? f[0] - i[0] : null; }})()"""
        )
        if got is not None:
            return float(got)
        await asyncio.sleep(0.005)
    return None


# The typing terminal's first two lines (its frame at +10+40): where the prompt is after ``clear``.
TYPING_LINES = {"x": 12, "y": 60, "w": 220, "h": 32}


async def _key_to_pixel(page, key: str, timeout: float = 3.0) -> float | None:
    await page.keyboard.press(key)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await page.evaluate("bench.watch.hit === null ? null : bench.watch.hit - bench.watch.t")
        if got is not None:
            return float(got)
        await asyncio.sleep(0.005)
    return None


async def typing(page, desktop: Desktop, meter: Meter, samples: int, busy: bool = False) -> Phase:
    """Key presses timed until the terminal's line changes; ``busy``: other windows paint meanwhile."""
    phase = Phase()
    await page.keyboard.type("clear")  # the prompt back on the first line
    await page.keyboard.press("Enter")
    await (asyncio.sleep(0.8) if busy else _quiet(page, 300))
    await page.evaluate(f"bench.watch = {{...{TYPING_LINES!r}, base: null, hit: null}}".replace("'", '"'))
    with meter:
        for i in range(samples):
            if i % 16 == 15:  # the line is full: empty it, outside the timing
                await page.evaluate("bench.watch.base = null")
                await page.keyboard.press("Control+u")
                await asyncio.sleep(0.3)
            key = "abcdefghij"[i % 10]
            t = await _key_to_pixel(page, key)
            if t is not None:
                phase.latencies.append(t)
            if busy:
                await asyncio.sleep(random.uniform(0.15, 0.25))
            else:
                await _quiet(page, 120)
                await asyncio.sleep(random.uniform(0.02, 0.08))
        meter.finish(phase)
    await page.evaluate("bench.watch = null")
    await page.keyboard.press("Control+u")
    return phase


async def scroll(page, desktop: Desktop, meter: Meter) -> Phase:
    phase = Phase()
    await page.keyboard.press("Control+u")
    await page.keyboard.type("seq 10000")
    await _quiet(page, 300)
    with meter:
        start = await page.evaluate("performance.now()")
        await page.keyboard.press("Enter")
        last = await _quiet(page, 1000, limit=120)
        phase.done_s = (last - start) / 1000
        meter.finish(phase)
        phase.seconds = max(phase.done_s, 0.001)  # bytes/s over the scroll itself
    return phase


async def drag(page, desktop: Desktop, meter: Meter, steps: int, rtt_ms: float) -> Phase:
    phase = Phase()
    x, y = desktop.place_drag_window()
    await _quiet(page, 300)
    # The title bar of openbox's frame (windowmove places the frame).
    px, py = x + 80, y + 9
    await page.mouse.move(px, py)
    await page.mouse.down()
    await asyncio.sleep(0.2)
    with meter:
        for i in range(steps):
            dx = 12 if (i // 20) % 2 == 0 else -12
            px += dx
            t = await _input_to_pixel(page, lambda px=px, i=i: page.mouse.move(px, py - (i % 2)))
            if t is not None:
                phase.latencies.append(t)
            # Quiet for longer than a round trip: the last step's updates are all in.
            await _quiet(page, 2 * rtt_ms + 60)
        meter.finish(phase)
    await page.mouse.up()
    return phase


def ssim(a: np.ndarray, b: np.ndarray, size: int = 8) -> float:
    """Structural similarity of two RGB images' luminance (Wang et al. 2004, the usual
    constants), over windows of ``size`` x ``size`` pixels, a mean of the map."""

    def luma(img: np.ndarray) -> np.ndarray:
        return img[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])

    def box(v: np.ndarray) -> np.ndarray:  # the mean over every window, by summed-area tables
        c = np.pad(v, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
        return (c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size]) / size**2

    x, y = luma(a), luma(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = box(x), box(y)
    vx, vy, cov = box(x * x) - mx * mx, box(y * y) - my * my, box(x * y) - mx * my
    return float((((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))).mean())


def _app_rate(count_file: Path) -> tuple[float, int] | None:
    words = count_file.read_text().split()
    return (float(words[0]), int(words[1])) if len(words) >= 2 else None


async def animation(
    page, desktop: Desktop, meter: Meter, kind: str, seconds: float, samples: int, tmp: Path, busy_typing: bool
) -> tuple[Phase, Phase | None]:
    """One frame source for ``seconds``: distinct frame numbers painted per second, the source's
    own rate, then a few painted frames compared with the server's, then typing meanwhile."""
    phase = Phase()
    count_file = tmp / f"frames-{kind}"
    count_file.write_text("")
    proc = desktop.start_animation(kind, count_file)
    busy = None
    try:
        window = desktop._window(framesource.TITLE)
        desktop.xdo("windowmove", "--sync", window, str(ANIMATION_AT[0]), str(ANIMATION_AT[1]))
        desktop.xdo("windowactivate", "--sync", desktop.typing_window)  # typing goes on meanwhile
        await asyncio.sleep(0.3)
        # (xdotool's getwindowgeometry counts the frame's decorations twice.)
        wx, wy = framesource.window_origin(int(window), desktop.display)
        await page.evaluate(f"bench.startMarker({wx}, {wy})")
        for _ in range(150):  # the window maps, the source starts, the first frames arrive
            if _app_rate(count_file) and await page.evaluate("bench.marker.frames") > 0:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)  # the stream settles
        app0 = _app_rate(count_file)
        with meter:
            t0, n0 = await page.evaluate("[performance.now(), bench.marker.frames]")
            await asyncio.sleep(seconds)
            t1, n1 = await page.evaluate("[performance.now(), bench.marker.frames]")
            meter.finish(phase)
        app1 = _app_rate(count_file)
        phase.fps = (n1 - n0) / ((t1 - t0) / 1000)
        if app0 and app1 and app1[0] > app0[0]:
            phase.app_fps = (app1[1] - app0[1]) / (app1[0] - app0[0])
        # Quality: frames painted, each against the frame of its number as the server held it
        # (the source's frames are deterministic: tests/bench/test_framesource.py checks that
        # the X server's framebuffer holds exactly them).
        await page.evaluate(f"bench.capture = {{want: {SSIM_SHOTS}, every: 400, last: 0, shots: []}}")
        for _ in range(60):
            if await page.evaluate("bench.capture.shots.length") >= SSIM_SHOTS:
                break
            await asyncio.sleep(0.1)
        shots = await page.evaluate("bench.capture.shots")
        await page.evaluate("bench.capture = null")
        scores = []
        for n, url in shots:
            painted = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))
            reference = framesource.rgb(_frame_like(kind, n))
            scores.append(ssim(painted, reference))
        phase.ssim = min(scores) if scores else None
        if busy_typing:
            # Typing while the pictures stream: the key's echo queues behind the frames.
            await page.mouse.click(100, 300)  # focus back on the terminal
            await asyncio.sleep(0.3)
            busy = await typing(page, desktop, meter, samples, busy=True)
        await page.evaluate("bench.marker = null")
    finally:
        _stop(proc)
    await _quiet(page, 300)
    return phase, busy


def _frame_like(kind: str, n: int) -> np.ndarray:
    """Frame ``n`` as shown: the frame of its place in the loop, rendered once, and its marker."""
    key = (kind, n % FRAMES)
    if key not in _FRAME_CACHE:
        _FRAME_CACHE[key] = framesource.frame(kind, n % FRAMES, FRAMES)
    pixels = _FRAME_CACHE[key].copy()
    framesource.mark(pixels, n)
    return pixels


_FRAME_CACHE: dict[tuple[str, int], np.ndarray] = {}


async def measure(
    browser, peer: Peer, profile: Profile, desktop: Desktop, args: argparse.Namespace, tmp: Path
) -> dict[str, Phase]:
    shaper_port = free_port()
    shaper = ShaperProcess(shaper_port, ("127.0.0.1", peer.port), profile.link)
    desktop.set_options(peer.server_options)
    desktop.reset_terminal()
    context = await browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        await page.goto(peer.url(shaper_port))
        await page.wait_for_function("() => window.bench && (bench.connected || bench.error)", timeout=60_000)
        if await page.evaluate("bench.error"):
            raise RuntimeError(f"{peer.name}: {await page.evaluate('bench.error')}")
        await page.mouse.click(100, 300)  # focus the typing terminal
        await _quiet(page, 800, limit=60)
        meter = Meter(shaper, peer)
        shots = os.environ.get("BENCH_SHOTS")
        if shots:
            await page.screenshot(path=f"{shots}/{profile.name}-{peer.port}-start.png")
        out = {
            "typing": await typing(page, desktop, meter, args.samples),
            "scroll": await scroll(page, desktop, meter),
            "drag": await drag(page, desktop, meter, args.samples, 2 * profile.delay_ms),
        }
        for kind in framesource.KINDS:
            out[kind], busy = await animation(
                page, desktop, meter, kind, args.animation_seconds, args.samples, tmp, kind == "volume"
            )
            if busy is not None:
                out["typing (animation on)"] = busy
        if shots:
            await page.screenshot(path=f"{shots}/{profile.name}-{peer.port}-end.png")
        levels = await page.evaluate("bench.levels")
        if levels:
            print(f"    {peer.name} levels: {levels}", file=sys.stderr)
        flow = await page.evaluate("[bench.rfb._enabledContinuousUpdates, bench.rfb._supportsFence, bench.encodings]")
        print(f"    {peer.name}: continuous updates {flow[0]}, fences {flow[1]}, encodings {flow[2]}", file=sys.stderr)
        if errors:
            raise RuntimeError(f"{peer.name}: page errors {errors}")
        return out
    finally:
        await context.close()
        shaper.close()


# ---------------------------------------------------------------- orchestration


def _baseline_tree(ref: str, dest: Path) -> Path:
    """visa/ and the desktop page's link adaptation as they were at ``ref``."""
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "visa", "web/src/js/desktop-link.js"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def _web_dir(dest: Path, baseline: Path) -> Path:
    """The page, this tree's noVNC and the link-adaptation modules (this tree's in js/, the
    baseline's in js-base/), served by every relay."""
    novnc = ROOT / "visa" / "static" / "vendor" / "novnc"
    if not (novnc / "core" / "rfb.js").exists():
        raise SystemExit("noVNC is not built: scripts/build-web.sh")
    shutil.copytree(WEB, dest)
    shutil.copytree(novnc, dest / "vendor" / "novnc")
    for sub, tree in (("js", ROOT), ("js-base", baseline)):
        (dest / sub).mkdir()
        shutil.copy(tree / "web" / "src" / "js" / "desktop-link.js", dest / sub)
    return dest


def _pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


async def run(args: argparse.Namespace) -> None:
    from playwright.async_api import async_playwright

    websockify = shutil.which("websockify") or str(Path(sys.executable).parent / "websockify")
    tmp = Path(tempfile.mkdtemp(prefix="visa-bench-desktop-"))
    procs: list[subprocess.Popen] = []
    desktop: Desktop | None = None

    def start(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=None, start_new_session=True)
        procs.append(proc)
        return proc

    try:
        base_tree = _baseline_tree(args.baseline_ref, tmp / "baseline")
        web = _web_dir(tmp / "web", base_tree)
        desktop = Desktop(tmp)
        profiles = [PROFILES[p] for p in args.profiles.split(",")]
        ws_port, base_port, video_port, proxy_port = free_port(), free_port(), free_port(), free_port()
        # The video proxy in front of the desktop's VNC server, as a session would run it.
        proxy = start([sys.executable, "-m", "visa.clouds.local.videoproxy", "--listen", f"127.0.0.1:{proxy_port}",
                       "--upstream", f"127.0.0.1:{desktop.port}", "--password-file", str(tmp / "vncpasswd")],
                      {**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
        wsfy = start([websockify, "--web", str(web), f"127.0.0.1:{ws_port}", f"127.0.0.1:{desktop.port}"])
        gateways, tokens = {}, {}
        for name, port, tree, backend in (("base", base_port, base_tree, desktop.port),
                                          ("video", video_port, None, proxy_port)):  # fmt: skip
            database_url = f"sqlite:///{tmp / name}.db"
            uid, tokens[name] = prepare_database(database_url, backend, 2 * len(profiles) + 2)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (tree, ROOT) if p)}
            # Any origin the shaper gives the page is the gateway's own (same host:port).
            gateways[name] = start(
                [sys.executable, "-m", "bench.desktop", "gateway", database_url, str(tmp), str(port),
                 "http://127.0.0.1"],
                env,
            )  # fmt: skip
        for proc, port in ((proxy, proxy_port), (wsfy, ws_port), (gateways["base"], base_port),
                           (gateways["video"], video_port)):  # fmt: skip
            wait_port(port, proc)
        defaults = {"FrameRate": "60", "CompareFB": "2", "ZlibLevel": "-1"}
        xvnc = lambda: [desktop.xvnc.pid]  # noqa: E731
        peers = [
            Peer(FIELD, ws_port, f"/page.html?quality=2&compression=6&password={PASSWORD}",
                 lambda: _children(wsfy.pid), xvnc, defaults),
            Peer(f"visa as it is ({args.baseline_ref})", base_port, "/bench/page.html?tuned=1&link=js-base",
                 lambda: [gateways["base"].pid], xvnc, defaults, tokens["base"], f"/ws/desktop/{uid}"),
            Peer(VIDEO, video_port, "/bench/page.html?tuned=1",
                 lambda: [gateways["video"].pid], lambda: [desktop.xvnc.pid, proxy.pid], defaults, tokens["video"],
                 f"/ws/desktop/{uid}"),
        ]  # fmt: skip
        results: dict[tuple[str, str], dict[str, Phase]] = {}
        started = time.monotonic()
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for i, profile in enumerate(profiles):
                order = peers[i % len(peers) :] + peers[: i % len(peers)]  # who goes first rotates
                for peer in order:
                    print(f"  {profile}: {peer.name}", file=sys.stderr, flush=True)
                    results[(profile.name, peer.name)] = await measure(
                        browser, peer, profile, desktop, args, tmp
                    )
            await browser.close()
        report(results, profiles, peers, args, time.monotonic() - started)
    finally:
        if desktop is not None:
            desktop.close()
        for proc in procs:
            _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


FIELD = "field default (websockify, noVNC q2/c6)"
VIDEO = "visa, video proxy (this tree)"
MARK = "†"


def _lat(p: Phase | None) -> str:
    return f"{_pct(p.latencies, 0.5):.0f} / {_pct(p.latencies, 0.99):.0f}" if p and p.latencies else "-"


def _counted(p: Phase) -> bool:
    return p.app_fps is not None and p.app_fps >= MIN_SOURCE_FPS


def report(results, profiles, peers, args, elapsed: float) -> None:
    load = os.getloadavg()
    print(
        f"\nDesktop {WIDTH}x{HEIGHT}, Xtigervnc {_xvnc_version()}, noVNC in headless Chromium, through the shaper; "
        f"{args.samples} inputs per latency workload, {args.animation_seconds:g} s per frame source; one run of "
        f"{elapsed / 60:.1f} min, peers interleaved; {os.cpu_count()} CPUs, shared and busy (load {load[0]:.1f})."
    )
    print("Latency: input until the changed pixels are painted in the page's canvas (ms, p50 / p99).")
    print(
        "fps: distinct frame numbers painted per second (the source's own rate in brackets; "
        f"{MARK}: the source fell below {MIN_SOURCE_FPS} fps, the row is not counted). SSIM: the worst of "
        f"{SSIM_SHOTS} painted frames against the server's frame of the same number.\n"
        "KB/s: bytes on the wire, both directions, at the shaper. CPU, % of one core during the volume "
        "source: instance = the desktop's VNC server (and its encoder), gateway = the relay.\n"
    )
    header = ("| link | peer | typing p50 / p99 | drag p50 / p99 | scroll 10k lines s | volume fps (source) | KB/s "
              "| SSIM | detector fps (source) | KB/s | SSIM | typing, volume on: p50 / p99 | CPU instance / gateway % |")  # fmt: skip
    print(header)
    print("|" + "|".join("---" for _ in header.split("|")[1:-1]) + "|")
    for profile in profiles:
        for peer in peers:
            r = results[(profile.name, peer.name)]
            cells = [profile.name, peer.name, _lat(r["typing"]), _lat(r["drag"]), f"{r['scroll'].done_s:.2f}"]
            for kind in framesource.KINDS:
                a = r[kind]
                app = f" ({a.app_fps:.0f})" if a.app_fps else " (?)"
                cells += [
                    f"{a.fps:.1f}{app}{'' if _counted(a) else ' ' + MARK}",
                    f"{a.bytes / a.seconds / 1024:,.0f}",
                    f"{a.ssim:.2f}" if a.ssim is not None else "-",
                ]
            cells.append(_lat(r.get("typing (animation on)")))
            v = r["volume"]
            cells.append(f"{100 * v.instance_cpu / v.seconds:.0f} / {100 * v.cpu / v.seconds:.0f}")
            print("| " + " | ".join(cells) + " |")
    after = peers[-1]
    for profile in profiles:
        field_, ours = results[(profile.name, FIELD)], results[(profile.name, after.name)]
        parts = []
        for kind in framesource.KINDS:
            f, o = field_[kind], ours[kind]
            if not (_counted(f) and _counted(o)):
                parts.append(f"{kind}: a source below {MIN_SOURCE_FPS} fps, not counted")
                continue
            parts.append(
                f"{kind} fps {o.fps / max(0.01, f.fps):.2f}x at {o.bytes / o.seconds / max(1, f.bytes / f.seconds):.2f}x "
                f"the bytes/s, SSIM {o.ssim if o.ssim is not None else float('nan'):.2f}"
            )
        fb, ob = field_.get("typing (animation on)"), ours.get("typing (animation on)")
        if fb and ob and fb.latencies and ob.latencies:
            parts.append(f"typing p99 with the volume on {_pct(ob.latencies, 0.99) / _pct(fb.latencies, 0.99):.2f}x")
        print(f"{profile.name}: {after.name} against the field default: " + "; ".join(parts) + ".")


def _xvnc_version() -> str:
    r = subprocess.run(["Xtigervnc", "-version"], capture_output=True, text=True)
    for word in (r.stdout + r.stderr).split():
        if word[:1].isdigit():
            return word
    return "?"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "gateway":
        serve_gateway(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples (a few minutes)")
    parser.add_argument("--profiles", default="lan,wifi,home,poor")
    parser.add_argument("--samples", type=int, default=None, help="inputs per latency workload")
    parser.add_argument("--animation-seconds", type=float, default=None)
    parser.add_argument("--baseline-ref", default=BASELINE_REF, help="git ref of 'visa as it was'")
    args = parser.parse_args()
    if args.samples is None:
        args.samples = 12 if args.quick else 40
    if args.animation_seconds is None:
        args.animation_seconds = 4 if args.quick else 8
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
