"""The video proxy in front of a real Xtigervnc: a client that offers H.264 gets the moving
region as H.264 (decoded here with FFmpeg's decoder through PyAV) and the rest losslessly,
and once the screen rests its picture equals the X server's framebuffer pixel for pixel; a
client that does not offer H.264 gets the server's own stream.

The client here is a small RFB client of the test's own (the browser's side is
tests/web/test_desktop_video.py): it speaks what noVNC speaks (its pixel format, continuous
updates, fences) and answers every fence at once."""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import framesource
from tests.processes import free_port, wait_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
PASSWORD = "vid-Pw-42"
WIDTH, HEIGHT = 1280, 800
# noVNC's pixel format: 32 bits, little-endian, true colour, red in the low byte.
NOVNC_FORMAT = struct.pack(">BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 0, 8, 16)


@pytest.fixture
def desktop(tmp_path: Path):
    if shutil.which("Xtigervnc") is None:
        pytest.skip("Xtigervnc is not installed")
    pytest.importorskip("av")
    port, proxy_port = free_port(), free_port()
    passwd = tmp_path / "vncpasswd"
    passwd.write_bytes(subprocess.run(["vncpasswd", "-f"], input=PASSWORD.encode(), capture_output=True,
                                      check=True).stdout)  # fmt: skip
    read_fd, write_fd = os.pipe()
    xvnc = subprocess.Popen(
        ["Xtigervnc", "-displayfd", str(write_fd), "-geometry", f"{WIDTH}x{HEIGHT}", "-depth", "24",
         "-rfbport", str(port), "-interface", "127.0.0.1", "-localhost=1", "-SecurityTypes", "VncAuth",
         "-PasswordFile", str(passwd),
         "-AlwaysShared=1", "-nolisten", "tcp"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        display = f":{f.readline().strip()}"
    proxy = subprocess.Popen(
        [sys.executable, "-m", "visa.clouds.local.videoproxy", "--listen", f"127.0.0.1:{proxy_port}",
         "--upstream", f"127.0.0.1:{port}", "--password-file", str(passwd)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(port, xvnc)
        wait_port(proxy_port, proxy)
        yield display, proxy_port
    finally:
        for proc in (proxy, xvnc):
            proc.terminate()
            proc.wait(timeout=10)


class Client:
    """Keeps a picture of the screen from the proxy's updates; counts rectangles by encoding."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server_init: bytes) -> None:
        import av

        from visa.gateway.rfb import ServerFilter

        self.reader, self.writer = reader, writer
        # The gateway's filter for viewers, fed the same bytes: it must keep step with them.
        self.filter = ServerFilter(server_init, drop_clipboard=True)
        self.filter.set_pixel_format(NOVNC_FORMAT)
        self.received = self.passed = 0
        self.screen = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        self.counts: dict[int, int] = {}
        self.inflate = zlib.decompressobj()
        self.decoders: dict[tuple[int, int, int, int], av.CodecContext] = {}
        self.last_update = time.monotonic()
        self.size = (WIDTH, HEIGHT)
        self.continuous = False

    @classmethod
    async def connect(cls, port: int, encodings: list[int], password: str = PASSWORD) -> Client:
        from visa.gateway.rfb import vnc_auth_response

        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
        assert (await reader.readexactly(12)).startswith(b"RFB 003.")
        writer.write(b"RFB 003.008\n")
        count = (await reader.readexactly(1))[0]
        assert 2 in await reader.readexactly(count)  # the server's password is asked for
        writer.write(b"\x02")
        writer.write(vnc_auth_response(password, await reader.readexactly(16)))
        if struct.unpack(">I", await reader.readexactly(4))[0] != 0:
            raise PermissionError(await reader.read())
        writer.write(b"\x01")
        head = await reader.readexactly(24)
        server_init = head + await reader.readexactly(struct.unpack(">I", head[20:24])[0])
        writer.write(b"\x00\x00\x00\x00" + NOVNC_FORMAT)
        writer.write(struct.pack(f">BxH{len(encodings)}i", 2, len(encodings), *encodings))
        writer.write(struct.pack(">BBHHHH", 3, 0, 0, 0, WIDTH, HEIGHT))
        return cls(reader, writer, server_init)

    async def read(self, n: int) -> bytes:
        data = await self.reader.readexactly(n)
        self.received += len(data)
        self.passed += len(self.filter.feed(data))
        return data

    async def run(self, seconds: float) -> None:
        import av

        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                kind = (await asyncio.wait_for(self.read(1), left))[0]
            except TimeoutError:
                return
            if kind == 150:  # the server does continuous updates: turn them on
                self.continuous = True
                self.writer.write(struct.pack(">BBHHHH", 150, 1, 0, 0, WIDTH, HEIGHT))
                continue
            if kind == 248:  # a fence: answered at once, as noVNC does
                head = await self.read(8)
                payload = await self.read(head[7])
                self.writer.write(struct.pack(">BxxxIB", 248, 0, len(payload)) + payload)
                continue
            assert kind == 0, kind
            (rects,) = struct.unpack(">xH", await self.read(3))
            for _ in range(rects):
                x, y, w, h, encoding = struct.unpack(">HHHHi", await self.read(12))
                self.counts[encoding] = self.counts.get(encoding, 0) + 1
                if encoding == 6:
                    (length,) = struct.unpack(">I", await self.read(4))
                    data = self.inflate.decompress(await self.read(length))
                    self.screen[y : y + h, x : x + w] = np.frombuffer(data, np.uint8).reshape(h, w, 4)[..., :3]
                elif encoding == 50:
                    length, flags = struct.unpack(">II", await self.read(8))
                    data = await self.read(length)
                    key = (x, y, w, h)
                    if flags & 1 or key not in self.decoders:
                        self.decoders[key] = av.CodecContext.create("h264", "r")
                    for packet in self.decoders[key].parse(data):
                        for frame in self.decoders[key].decode(packet):
                            self.screen[y : y + h, x : x + w] = frame.to_ndarray(format="rgb24")
                elif encoding == -308:  # a new size: the picture starts again
                    head = await self.read(4)
                    await self.read(16 * head[0])
                    self.size = (w, h)
                    self.screen = np.zeros((h, w, 3), np.uint8)
                elif encoding == -239:  # the cursor's shape
                    await self.read(w * h * 4 + (w + 7) // 8 * h)
                else:
                    raise AssertionError(f"encoding {encoding}")
            if not self.continuous:
                self.writer.write(struct.pack(">BBHHHH", 3, 1, 0, 0, *self.size))
            self.last_update = time.monotonic()


def test_a_moving_picture_goes_as_h264_and_rests_exact(desktop: tuple[str, int], tmp_path: Path) -> None:
    display, port = desktop
    env = {**os.environ, "DISPLAY": display, "PYTHONPATH": str(ROOT)}
    source = subprocess.Popen(
        [sys.executable, "-m", "bench.framesource", "volume", str(tmp_path / "count"), "--frames", "8"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip

    async def body() -> Client:
        client = await Client.connect(port, [50, 7, 6, 0, -239, -312, -313])
        await client.run(4)  # the pictures stream
        source.terminate()
        source.wait(timeout=10)
        await client.run(2)  # the screen rests
        return client

    try:
        client = asyncio.run(body())
    finally:
        if source.poll() is None:
            source.terminate()
            source.wait(timeout=10)
    print(client.counts)
    assert client.counts.get(50, 0) >= 10, client.counts  # the moving window went as video
    assert client.counts.get(6, 0) >= 1, client.counts  # and the rest, and the rested picture, losslessly
    # The viewers' filter in the gateway follows the video path's stream to every message's end.
    assert client.filter._want == ("peek", 1) and not client.filter._held
    assert client.received == client.passed
    shown = framesource.grab(0, 0, WIDTH, HEIGHT, display)
    assert np.array_equal(client.screen, shown)  # at rest: exactly the server's framebuffer


def test_a_client_without_h264_gets_the_servers_own_stream(desktop: tuple[str, int]) -> None:
    _, port = desktop

    async def body() -> int:
        client = await Client.connect(port, [7, 0])  # Tight and raw
        head = await client.reader.readexactly(4 + 12)
        client.writer.close()
        assert head[0] == 0, head  # a framebuffer update
        return struct.unpack(">i", head[12:16])[0]

    # Tight: the server's own encoding, which the video path never sends.
    assert asyncio.run(body()) == 7


def test_a_wrong_password_is_refused(desktop: tuple[str, int]) -> None:
    _, port = desktop
    with pytest.raises(PermissionError, match="authentication failed"):
        asyncio.run(Client.connect(port, [50, 6, 0], password="not-it"))


def test_the_owners_window_size_reaches_the_server_through_the_video_path(desktop: tuple[str, int]) -> None:
    display, port = desktop

    async def body() -> Client:
        client = await Client.connect(port, [50, 6, 0, -308, -312, -313])
        await client.run(1)
        screen = struct.pack(">IHHHHI", 0, 0, 0, 1024, 768, 0)
        client.writer.write(struct.pack(">BxHHBx", 251, 1024, 768, 1) + screen)  # SetDesktopSize
        await client.run(2)
        return client

    client = asyncio.run(body())
    assert client.size == (1024, 768)
    assert np.array_equal(client.screen, framesource.grab(0, 0, 1024, 768, display))


def test_a_video_cut_by_the_screens_edge_comes_to_rest_exact() -> None:
    """A screen whose height is no multiple of the damage grid (a browser window's size): the
    video's last row of tiles is cut by the edge. Those tiles go losslessly with every frame
    and never keep the video from resting; at rest the whole region goes losslessly."""
    pytest.importorskip("av")
    from visa.clouds.local.videoproxy import H264, ZLIB, PixelFormat, Session

    server = PixelFormat.parse(struct.pack(">BBBBHHHBBB", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0))
    session = Session(1280, 781, server, server)
    rng = np.random.default_rng(7)
    sent: list[int] = []

    def send() -> None:
        for rect in session.update(time.monotonic()):
            sent.append(struct.unpack(">HHHHi", rect[:12])[4])

    for _ in range(20):  # a picture moving in the bottom half, down to the screen's edge
        session.fb[400:781, 0:640] = rng.integers(0, 1 << 24, (381, 640), dtype=np.uint32)
        session.damage(0, 400, 640, 381)
        session.end_of_server_update()
        send()
        time.sleep(1 / 30)
    assert H264 in sent, sent
    moving = len(sent)
    deadline = time.monotonic() + 5
    while (session.video is not None or session.dirty.any()) and time.monotonic() < deadline:
        send()
        time.sleep(1 / 30)
    assert session.video is None and not session.dirty.any()  # at rest
    rested = sent[moving:]
    assert ZLIB in rested and H264 not in rested[rested.index(ZLIB) :], rested


def _stream_over_a_link(rate: float, one_way: float, seconds: float = 10.0) -> tuple[Any, list[tuple[float, float]]]:
    """A detector stack (structure and Poisson noise, 30 frames a second, 512x384) through the
    video path over a simulated link of ``rate`` bytes a second and ``one_way`` delay, on a clock of
    its own: the session, and (sent at, painted at) of every video frame."""
    from visa.clouds.local.videoproxy import H264, PixelFormat, Session

    server = PixelFormat.parse(struct.pack(">BBBBHHHBBB", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0))
    w, h = 512, 384
    session = Session(w, h, server, server)
    session.continuous = True
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:h, 0:w]
    rings = 60 + 50 * np.cos(np.hypot(yy - h / 2, xx - w / 2) / 6)
    frames = [np.clip(rng.poisson(rings), 0, 255).astype(np.uint32) * 0x010101 for _ in range(12)]
    start = now = time.monotonic()
    link_free = now
    answers: list[tuple[float, int]] = []  # (answered at, fence id)
    painted: list[tuple[float, float]] = []
    shown, tick = 0, 1 / 120
    while now - start < seconds:
        while answers and answers[0][0] <= now:
            session.fence_answered(*reversed(answers.pop(0)))
        if now - start >= shown / 30:  # the source's next frame
            session.fb[:] = frames[shown % len(frames)]
            session.damage(0, 0, w, h)
            session.end_of_server_update(now)
            shown += 1
        if session.may_send(now) and (session.dirty.any() or session.video is not None):
            rects = session.update(now)
            if rects:
                size = sum(len(r) for r in rects)
                session.fence_id += 1
                session.in_flight[session.fence_id] = (now, size)
                link_free = max(link_free, now) + size / rate
                answers.append((link_free + 2 * one_way, session.fence_id))
                answers.sort()
                if any(struct.unpack(">HHHHi", r[:12])[4] == H264 for r in rects):
                    painted.append((now, link_free + one_way))
        now += tick
    return session, painted


def test_a_full_link_gets_cheaper_frames_not_a_queue() -> None:
    """Poisson noise over a link that carries a third of its frames at the best quality: the
    bytes unanswered stay near the link's round trip (the frames painted are recent ones) and
    the frames get cheaper until most of them get through."""
    pytest.importorskip("av")
    from visa.clouds.local.videoproxy import CRF_BEST, TARGET_FPS

    session, painted = _stream_over_a_link(rate=150_000, one_way=0.1)
    late = [p - s for s, p in painted if s > painted[0][0] + 4]
    fps = len(late) / (painted[-1][0] - painted[0][0] - 4)
    assert session.crf > CRF_BEST
    assert fps >= TARGET_FPS * 0.75, (fps, session.crf)
    assert max(late) < 0.6, max(late)  # a 200 ms round trip: no second of frames queued


def test_a_fast_link_keeps_the_best_quality() -> None:
    pytest.importorskip("av")
    from visa.clouds.local.videoproxy import CRF_BEST

    session, painted = _stream_over_a_link(rate=12_000_000, one_way=0.001, seconds=5)
    assert session.crf == CRF_BEST
    assert len([s for s, _ in painted if s > painted[0][0] + 2]) / (painted[-1][0] - painted[0][0] - 2) >= 25
