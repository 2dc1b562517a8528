"""The desktop over a real network: input-to-pixel latency, frame rate and bytes on the wire.

    python -m bench.desktop [--quick] [--profiles lan,wifi,home,poor] [--baseline-ref REF]

A real desktop (Xtigervnc + openbox, xterms, a matplotlib animation) is watched by noVNC in
headless Chromium through a link shaper (bench/shaper.py) with the profiles of
``bench.shaper.PROFILES``. Three peers, interleaved in one run (each profile runs every peer
in turn, the order rotating), against the same X server:

* ``field default``: websockify + noVNC as Open OnDemand ships it (quality 2, compression
  6, the client doing VncAuth), TigerVNC's default options;
* ``visa as it was``: the gateway of ``--baseline-ref`` (visa/ extracted from git) and the
  desktop page's former fixed levels (quality 6, compression 2);
* ``visa tuned``: this tree's gateway and the desktop page's link adaptation
  (web/src/js/desktop-link.js).

Every peer gets TigerVNC's default server options (set with vncconfig before it runs, so a
variant can be tried by changing ``Peer.server_options``).

Workloads, on one connection per peer and profile:

* ``typing``: a key press in an idle xterm until the echo is painted in the page's canvas
  (timed in the page: a keydown listener and a hook on noVNC's display flip);
* ``scroll``: ``seq 10000`` in the xterm: Enter until the last update is painted;
* ``drag``: a window dragged by its title bar, each mouse step until the moved window is painted;
* ``animation``: a 1024x1024 matplotlib animation at its natural rate: updates painted per
  second in the page.

Bytes per second are counted by the shaper (both directions), gateway CPU from /proc for
the relay's processes (websockify's forks included) over each workload. With
``BENCH_SHOTS=DIR`` the page is photographed before and after each peer's workloads.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.gateway import PASSWORD, _children, prepare_database
from bench.shaper import PROFILES, Profile, ShaperProcess
from tests.processes import free_port, wait_port

ROOT = Path(__file__).resolve().parents[1]
WEB = Path(__file__).with_name("desktop_web")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
WIDTH, HEIGHT = 1280, 1080
BASELINE_REF = "8ebc523"  # visa before this benchmark's tuning

ANIMATION = """
import sys, time
import matplotlib
matplotlib.use("TkAgg")
matplotlib.rcParams["toolbar"] = "None"
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import FuncAnimation

fig = plt.figure("animation", figsize=(10.24, 10.24), dpi=100)
fig.canvas.manager.window.wm_geometry("+256+0")
ax = fig.add_axes([0, 0, 1, 1])
ax.set_axis_off()
y, x = np.mgrid[0:1024, 0:1024] / 1024.0
base = (plt.get_cmap("viridis")(np.sin(12 * x) * np.cos(9 * y + 4 * x * x) * 0.5 + 0.5)[..., :3] * 255).astype(np.uint8)
im = ax.imshow(base, interpolation="nearest", animated=True)
count = [0]
out = open(sys.argv[1], "w")

def step(_):
    n = count[0] = count[0] + 1
    frame = np.roll(base, 6 * n, axis=1)
    # A frame marker the page reads: eight well-apart grey levels in turn.
    frame[:48, :48] = (n % 8) * 32 + 16
    im.set_data(frame)
    if n % 5 == 0:
        out.seek(0); out.write(f"{time.monotonic()} {n}\\n"); out.flush()
    return (im,)

anim = FuncAnimation(fig, step, interval=1, blit=True, cache_frame_data=False)
plt.show()
"""


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
        self._spawn(["xterm", "-geometry", "30x40+10+40", "-fa", "Monospace", "-fs", "10", "+bc", "-T", "typing",
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

    def start_animation(self, count_file: Path) -> subprocess.Popen:
        script = self.tmp / "animation.py"
        script.write_text(ANIMATION)
        return self._spawn([sys.executable, str(script), str(count_file)])

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
    pids: object  # () -> list[int]
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
    fps: float | None = None
    app_fps: float | None = None
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
        return self

    def finish(self, phase: Phase) -> None:
        phase.seconds = time.monotonic() - self.t0
        phase.bytes = sum(self.shaper.bytes) - self.b0
        pids = sorted(set(self.pids) | set(self.peer.pids()))
        phase.cpu = _cpu_seconds(pids) - self.c0

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


async def animation(
    page, desktop: Desktop, meter: Meter, seconds: float, samples: int, tmp: Path
) -> tuple[Phase, Phase]:
    phase = Phase()
    count_file = tmp / "frames"
    count_file.write_text("")
    proc = desktop.start_animation(count_file)
    try:
        window = desktop._window("animation")
        geometry = dict(
            line.strip().split(": ", 1) for line in desktop.xdo("getwindowgeometry", window).splitlines()[1:]
        )
        wx, wy = (int(v) for v in geometry["Position"].split()[0].split(","))
        await page.evaluate(f"bench.marker = {{x: {wx + 24}, y: {wy + 24}, last: null, frames: 0}}")
        for _ in range(100):  # the window maps, the animation starts
            if count_file.read_text().strip():
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)  # the stream settles
        app0 = count_file.read_text().split()
        with meter:
            t0, n0 = await page.evaluate("[performance.now(), bench.marker.frames]")
            await asyncio.sleep(seconds)
            t1, n1 = await page.evaluate("[performance.now(), bench.marker.frames]")
            meter.finish(phase)
        await page.evaluate("bench.marker = null")
        app1 = count_file.read_text().split()
        phase.fps = (n1 - n0) / ((t1 - t0) / 1000)
        if len(app0) == 2 and len(app1) == 2:
            phase.app_fps = (int(app1[1]) - int(app0[1])) / (float(app1[0]) - float(app0[0]))
        # Typing while the animation streams: the key's echo queues behind the frames.
        await page.mouse.click(100, 300)  # focus back on the terminal
        await asyncio.sleep(0.3)
        busy = await typing(page, desktop, meter, samples, busy=True)
    finally:
        _stop(proc)
    await _quiet(page, 300)
    return phase, busy


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
        out["animation"], out["typing (animation on)"] = await animation(
            page, desktop, meter, args.animation_seconds, args.samples, tmp
        )
        if shots:
            await page.screenshot(path=f"{shots}/{profile.name}-{peer.port}-end.png")
        levels = await page.evaluate("bench.levels")
        if levels:
            print(f"    {peer.name} levels: {levels}", file=sys.stderr)
        if errors:
            raise RuntimeError(f"{peer.name}: page errors {errors}")
        return out
    finally:
        await context.close()
        shaper.close()


# ---------------------------------------------------------------- orchestration


def _baseline_tree(ref: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "visa"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def _web_dir(dest: Path) -> Path:
    """The page, this tree's noVNC and its link-adaptation module, served by every relay."""
    novnc = ROOT / "visa" / "static" / "vendor" / "novnc"
    if not (novnc / "core" / "rfb.js").exists():
        raise SystemExit("noVNC is not built: scripts/build-web.sh")
    shutil.copytree(WEB, dest)
    shutil.copytree(novnc, dest / "vendor" / "novnc")
    (dest / "js").mkdir()
    shutil.copy(ROOT / "web" / "src" / "js" / "desktop-link.js", dest / "js")
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
        web = _web_dir(tmp / "web")
        desktop = Desktop(tmp)
        database_url = f"sqlite:///{tmp / 'bench.db'}"
        profiles = [PROFILES[p] for p in args.profiles.split(",")]
        uid, tokens = prepare_database(database_url, desktop.port, 4 * len(profiles) + 4)
        ws_port, base_port, tuned_port = free_port(), free_port(), free_port()
        wsfy = start([websockify, "--web", str(web), f"127.0.0.1:{ws_port}", f"127.0.0.1:{desktop.port}"])
        base_tree = _baseline_tree(args.baseline_ref, tmp / "baseline")
        gateways = {}
        for name, port, tree in (("base", base_port, base_tree), ("tuned", tuned_port, None)):
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (tree, ROOT) if p)}
            # Any origin the shaper gives the page is the gateway's own (same host:port).
            gateways[name] = start(
                [
                    sys.executable,
                    "-m",
                    "bench.desktop",
                    "gateway",
                    database_url,
                    str(tmp),
                    str(port),
                    "http://127.0.0.1",
                ],
                env,
            )
        for proc, port in ((wsfy, ws_port), (gateways["base"], base_port), (gateways["tuned"], tuned_port)):
            wait_port(port, proc)
        half = len(tokens) // 2
        defaults = {"FrameRate": "60", "CompareFB": "2", "ZlibLevel": "-1"}
        peers = [
            Peer("field default (websockify, noVNC q2/c6)", ws_port, f"/page.html?quality=2&compression=6&password={PASSWORD}",
                 lambda: _children(wsfy.pid), defaults),
            Peer("visa as it was (q6/c2)", base_port, "/bench/page.html?quality=6&compression=2",
                 lambda: [gateways["base"].pid], defaults, tokens[:half], f"/ws/desktop/{uid}"),
            Peer("visa tuned", tuned_port, "/bench/page.html?tuned=1",
                 lambda: [gateways["tuned"].pid], defaults, tokens[half:], f"/ws/desktop/{uid}"),
        ]  # fmt: skip
        results: dict[tuple[str, str], dict[str, Phase]] = {}
        started = time.monotonic()
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for i, profile in enumerate(profiles):
                order = peers[i % 3 :] + peers[: i % 3]  # who goes first rotates
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


def report(results, profiles, peers, args, elapsed: float) -> None:
    load = os.getloadavg()
    print(
        f"\nDesktop {WIDTH}x{HEIGHT}, Xtigervnc {_xvnc_version()}, noVNC in headless Chromium, through the shaper; "
        f"{args.samples} inputs per latency workload, {args.animation_seconds:g} s of animation; one run of "
        f"{elapsed / 60:.1f} min, peers interleaved; {os.cpu_count()} CPUs, shared and busy (load {load[0]:.1f})."
    )
    print("Latency: input until the changed pixels are painted in the page's canvas (ms, p50 / p99).")
    print(
        "KB/s: bytes on the wire, both directions, at the shaper. CPU: the relay's processes, % of one core.\n"
    )
    header = ("| link | peer | typing p50 / p99 | KB/s | drag p50 / p99 | KB/s | scroll 10k lines s | KB/s "
              "| animation fps (app) | KB/s | relay CPU % (anim.) | typing, animation on: p50 / p99 |")  # fmt: skip
    print(header)
    print("|" + "|".join("---" for _ in header.split("|")[1:-1]) + "|")
    for profile in profiles:
        for peer in peers:
            r = results[(profile.name, peer.name)]
            cells = [profile.name, peer.name]
            for w in ("typing", "drag"):
                p = r[w]
                lat = f"{_pct(p.latencies, 0.5):.0f} / {_pct(p.latencies, 0.99):.0f}" if p.latencies else "-"
                cells += [lat, f"{p.bytes / p.seconds / 1024:,.1f}"]
            s = r["scroll"]
            cells += [f"{s.done_s:.2f}", f"{s.bytes / s.seconds / 1024:,.0f}"]
            a = r["animation"]
            app = f" ({a.app_fps:.0f})" if a.app_fps else ""
            cells += [
                f"{a.fps:.1f}{app}",
                f"{a.bytes / a.seconds / 1024:,.0f}",
                f"{100 * a.cpu / a.seconds:.0f}",
            ]
            b = r["typing (animation on)"].latencies
            cells.append(f"{_pct(b, 0.5):.0f} / {_pct(b, 0.99):.0f}" if b else "-")
            print("| " + " | ".join(cells) + " |")
    home = next((p for p in profiles if p.name == "home"), None)
    if home is not None:
        field_, _, tuned = (results[(home.name, p.name)] for p in peers)
        ft, tt = field_["typing"], tuned["typing"]
        print(
            f"\nHome: tuned/field typing p50 = {statistics.median(tt.latencies) / statistics.median(ft.latencies):.2f}x "
            f"(goal <= 0.7x) at {tt.bytes / tt.seconds / max(1, ft.bytes / ft.seconds):.2f}x the bytes/s; "
            f"animation fps {tuned['animation'].fps / max(0.01, field_['animation'].fps):.2f}x (goal >= 1.5x)."
        )


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
