"""An RFB proxy in front of the desktop's VNC server that sends the regions that move as video.

    python videoproxy.py --listen PATH|HOST:PORT --upstream PATH|HOST:PORT [--password-file F]

It runs beside the VNC server (in the session's sandbox, where the pixels are), so the
encoding's cost lands there and the gateway stays a relay. With ``--password-file`` (the
server's own, as vncpasswd writes it) it asks its clients for that password (VncAuth), as the
server would, and gives it to the server; without, it asks for none. It imports nothing of
visa: the session runs it as a script, with the system's Python.

A client that offers RFB's Open H.264 encoding (type 50; noVNC does where the browser decodes
H.264 through WebCodecs) gets the **video path**: the proxy reads the server's framebuffer as
raw pixels over the local socket and keeps a copy; the tiles that keep changing (a rotating
volume, a stack scrolled through, a live plot) form one rectangle sent as H.264 (libx264
through PyAV, tuned for latency: no B-frames, no look-ahead); every other change is sent
losslessly (RFB's Zlib encoding), and once the moving rectangle has been still for
``REST_S`` it is sent losslessly too, so what stands still is exact. Updates are pushed with
RFB's continuous updates and paced by fences: each update is followed by a fence the client
answers once it has processed it. What is unanswered is bounded twice: by count (enough
updates to cover the round trip at the video's rate) and by bytes (what the link delivered in
the last second, over one and a half round trips), so a full link holds no more than half a
round trip of queue and every frame sent is a recent one. When the byte bound holds back
frames that are due and fewer than ``TARGET_FPS`` get through, the video's frames are made
cheaper (its CRF steps up, the encoder restarted at it: libx264 takes a CRF only when it
opens); after ``RELAX_S`` without holding back, they step back towards ``CRF_BEST``.

Any other client (no H.264 offered, or a pixel format other than 32-bit true colour) gets the
server's own stream, byte for byte: the proxy steps aside.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import hmac
import logging
import math
import os
import struct
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, modes

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # cryptography before 43 (Debian 12's python3-cryptography)
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES  # type: ignore[no-redef,unused-ignore]

log = logging.getLogger("visa.videoproxy")

RAW, ZLIB, H264 = 0, 6, 50
CURSOR, CONTINUOUS_UPDATES, FENCE = -239, -313, -312
DESKTOP_SIZE, EXTENDED_DESKTOP_SIZE = -223, -308
EXTENDED_CLIPBOARD = 0xC0A1E5CE - (1 << 32)  # UTF-8 clipboard: its messages are ServerCutText's, relayed
TILE = 16  # the damage grid, pixels
MOTION_TILE = 64  # the motion grid
HOT_HITS = 4.0  # a motion tile changing this often (decayed over HALF_LIFE_S) is moving
HALF_LIFE_S = 0.5
MIN_VIDEO_TILES = 4  # fewer moving tiles than this: no video, only lossless updates
REST_S = 0.25  # the moving rectangle still for this long: sent losslessly, the video ends
FRAME_S = 1 / 30  # at most this many video frames a second
CRF_BEST, CRF_WORST = 23, 40
CRF_UP, CRF_DOWN = 2, 1
KEY_FRAME_S = 0.5  # after a new encoder starts, its key frame's own delay
TARGET_FPS = 20  # fewer video frames than this a second, held back by the link: cheaper frames
ADAPT_S = 1.0  # the CRF changes at most this often (each change costs a key frame)
RELAX_S = 3.0  # this long without frames held back: the CRF steps towards the best
RATE_WINDOW_S = 1.0  # the link's delivery rate: bytes answered over this window
MIN_WINDOW_BYTES = 64 * 1024  # unanswered bytes always allowed (100 ms of a 5 Mbit/s link)
FENCE_REQUEST = 1 << 31
PROCESS_NAME = b"visa-video"


class RfbError(Exception):
    pass


# ---------------------------------------------------------------- streams


async def _open(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if address.startswith("/"):
        return await asyncio.open_unix_connection(address, limit=1 << 22)
    host, _, port = address.rpartition(":")
    return await asyncio.open_connection(host, int(port), limit=1 << 22)


def _reverse_bits(byte: int) -> int:
    return int(f"{byte:08b}"[::-1], 2)


_KEY_BITS = bytes(_reverse_bits(b) for b in range(256))


def vnc_auth_response(password: str, challenge: bytes) -> bytes:
    key = password.encode("latin-1", errors="replace")[:8].ljust(8, b"\0").translate(_KEY_BITS)
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()  # single DES, as VncAuth is
    return encryptor.update(challenge) + encryptor.finalize()


async def upstream_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, password: str) -> bytes:
    """Logs in to the VNC server (shared); returns its ServerInit."""
    version = await reader.readexactly(12)
    if not version.startswith(b"RFB 003."):
        raise RfbError("not a VNC server")
    writer.write(b"RFB 003.008\n")
    (count,) = await reader.readexactly(1)
    offered = await reader.readexactly(count)
    if 2 in offered and password:
        writer.write(b"\x02")
        writer.write(vnc_auth_response(password, await reader.readexactly(16)))
    elif 1 in offered:
        writer.write(b"\x01")
    else:
        raise RfbError(f"no security type the proxy can use ({list(offered)})")
    if struct.unpack(">I", await reader.readexactly(4))[0] != 0:
        raise RfbError("the VNC server refused the proxy")
    writer.write(b"\x01")
    head = await reader.readexactly(24)
    (name_length,) = struct.unpack(">I", head[20:24])
    return head + await reader.readexactly(min(name_length, 65536))


def read_password_file(path: str) -> str:
    """The password in a vncpasswd file: DES with VNC's fixed key (bits reversed, as VNC's DES)."""
    data = Path(path).read_bytes()[:8]
    key = bytes([23, 82, 107, 6, 35, 78, 88, 7]).translate(_KEY_BITS)
    decryptor = Cipher(TripleDES(key * 3), modes.ECB()).decryptor()
    return (decryptor.update(data.ljust(8, b"\0")) + decryptor.finalize()).rstrip(b"\0").decode("latin-1")


async def client_handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server_init: bytes, password: str
) -> None:
    writer.write(b"RFB 003.008\n")
    await reader.readexactly(12)
    kind = 2 if password else 1  # VncAuth with the server's password, or None
    writer.write(bytes([1, kind]))
    if (await reader.readexactly(1))[0] != kind:
        raise RfbError("the client chose another security type")
    if password:
        challenge = os.urandom(16)
        writer.write(challenge)
        if not hmac.compare_digest(await reader.readexactly(16), vnc_auth_response(password, challenge)):
            reason = b"authentication failed"
            writer.write(struct.pack(">II", 1, len(reason)) + reason)
            await writer.drain()
            raise RfbError("a client gave a wrong password")
    writer.write(struct.pack(">I", 0))
    await reader.readexactly(1)  # ClientInit: the server's share is shared anyway
    writer.write(server_init)


@dataclass(frozen=True)
class PixelFormat:
    bpp: int
    depth: int
    big_endian: bool
    true_colour: bool
    shifts: tuple[int, int, int]
    maxes: tuple[int, int, int]

    @classmethod
    def parse(cls, data: bytes) -> PixelFormat:
        bpp, depth, big, true, rmax, gmax, bmax, rs, gs, bs = struct.unpack(">BBBBHHHBBB", data[:13])
        return cls(bpp, depth, bool(big), bool(true), (rs, gs, bs), (rmax, gmax, bmax))

    @property
    def plain(self) -> bool:
        """32-bit true colour, 8 bits a channel: what the video path handles."""
        return self.bpp == 32 and self.true_colour and self.maxes == (255, 255, 255)


# ---------------------------------------------------------------- the video path


@dataclass
class Video:
    """One H.264 stream for one rectangle (a context of the client's decoder)."""

    x: int
    y: int
    w: int
    h: int
    crf: int
    codec: object = None
    frame: object = None  # the BGRA frame the pixels are copied into, reused
    frames: int = 0
    fresh: bool = True  # its first frame resets the client's context

    def encode(self, pixels: np.ndarray) -> bytes:
        import av  # PyAV: only the video path needs it

        if self.frame is None:
            self.frame = av.VideoFrame(self.w, self.h, "bgra")
        if self.codec is None:
            codec = av.CodecContext.create("libx264", "w")
            codec.width, codec.height, codec.pix_fmt = self.w, self.h, "yuv420p"
            codec.time_base = Fraction(1, 30)
            # One slice a frame: noVNC's parser takes every slice for a frame of its own (zerolatency's
            # sliced threads would cut each frame in as many). One key frame, at the start.
            codec.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": str(self.crf),
                             "x264-params": "keyint=100000:scenecut=0:repeat-headers=1:threads=1:sliced-threads=0:slices=1"}  # fmt: skip
            self.codec = codec
        # One copy, straight into the frame's plane (rows may be padded); the colour conversion
        # averages chroma bilinearly, the fast way (1.0 against 1.8 ms a 1024x768 frame).
        plane = self.frame.planes[0]  # type: ignore[attr-defined]
        rows = np.frombuffer(plane, np.uint32).reshape(self.h, plane.line_size // 4)
        rows[:, : self.w] = pixels
        yuv = self.frame.reformat(format="yuv420p", interpolation="FAST_BILINEAR")  # type: ignore[attr-defined]
        yuv.pts = self.frames
        self.frames += 1
        return b"".join(bytes(p) for p in self.codec.encode(yuv))  # type: ignore[attr-defined]


@dataclass
class Session:
    """One client on the video path."""

    width: int
    height: int
    server_format: PixelFormat
    client_format: PixelFormat
    fb: np.ndarray = field(init=False)
    dirty: np.ndarray = field(init=False)  # tiles changed since the last update sent
    recent: np.ndarray = field(init=False)  # motion tiles changed by the server's last update
    hits: np.ndarray = field(init=False)  # motion tiles: decayed count of changes
    still_since: float = 0.0
    video: Video | None = None
    crf: int = CRF_BEST
    continuous: bool = False
    wants: bool = False  # request-and-wait: the client asked and has not been answered
    in_flight: dict[int, tuple[float, int]] = field(default_factory=dict)  # fence id -> (sent at, bytes)
    fence_id: int = 0
    min_rtt: float = math.inf
    answered: deque[tuple[float, int]] = field(default_factory=deque)  # (when, bytes): the last RATE_WINDOW_S
    answers_since: float = math.inf  # the first answer: the rate means something a window later
    largest: int = 0  # the largest update of the last window, bytes
    held_at: float = -math.inf  # the byte bound last held back a due video frame
    adapted_at: float = -math.inf
    video_sent: deque[float] = field(default_factory=deque)  # when video frames went, the last second
    last_video_at: float = 0.0
    cursor: bytes | None = None
    resized: bytes | None = None  # the server's new size, told to the client before any pixel
    zlib: object = field(default_factory=lambda: zlib.compressobj(1))
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    stats: dict[str, int] = field(default_factory=lambda: {"h264": 0, "zlib": 0, "updates": 0})

    def __post_init__(self) -> None:
        self.resize(self.width, self.height)

    def resize(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.video = None
        self.fb = np.zeros((self.height, self.width), np.uint32)
        self.dirty = np.zeros((-(-self.height // TILE), -(-self.width // TILE)), bool)
        self.hits = np.zeros((-(-self.height // MOTION_TILE), -(-self.width // MOTION_TILE)))
        self.recent = np.zeros(self.hits.shape, bool)
        self.hits_at = time.monotonic()

    # -- what the server sent

    def damage(self, x: int, y: int, w: int, h: int) -> None:
        self.dirty[y // TILE : -(-(y + h) // TILE), x // TILE : -(-(x + w) // TILE)] = True
        self.recent[y // MOTION_TILE : -(-(y + h) // MOTION_TILE), x // MOTION_TILE : -(-(x + w) // MOTION_TILE)] = True

    def end_of_server_update(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.hits *= 0.5 ** ((now - self.hits_at) / HALF_LIFE_S)
        self.hits_at = now
        self.hits += self.recent
        self.recent[:] = False
        self.changed.set()

    # -- what the client gets

    def may_send(self, now: float) -> bool:
        if not self.continuous:
            return self.wants
        if not self.in_flight:
            return True
        # Enough updates unanswered to cover the round trip at the video's rate, at least two...
        rtt = self.min_rtt if self.min_rtt < math.inf else 0.1
        if len(self.in_flight) >= max(2, min(12, math.ceil(rtt / FRAME_S) + 1)):
            return False
        # ... and no more bytes than the link delivers in one and a half round trips.
        if self.in_flight_bytes() < self.window_bytes(now):
            return True
        # (A new encoder's key frame holds back the frames after it: not the link's verdict.)
        if self.video is not None and self.dirty.any() and now - self.adapted_at > KEY_FRAME_S:
            self.held_at = now
        return False

    def in_flight_bytes(self) -> int:
        return sum(size for _, size in self.in_flight.values())

    def delivery_rate(self, now: float) -> float | None:
        """Bytes a second the client answered for over the last window (None: too early to say)."""
        while self.answered and self.answered[0][0] <= now - RATE_WINDOW_S:
            self.answered.popleft()
        if now - self.answers_since < RATE_WINDOW_S:
            return None
        return sum(size for _, size in self.answered) / RATE_WINDOW_S

    def window_bytes(self, now: float) -> float:
        rate = self.delivery_rate(now)
        if rate is None:
            # Until the link's rate is known, little at a time: the round trips measured then carry
            # next to no queue, so the window is never sized by a queue of its own making.
            return MIN_WINDOW_BYTES
        rtt = self.min_rtt
        # The largest recent update at least: a rate measured while little moved must not
        # hold the next frame behind the one before it for ever; and never less than
        # MIN_WINDOW_BYTES, so the small updates of typing after an idle spell never wait a
        # round trip behind one another (the rate of an idle second is nothing).
        return max(rate * max(rtt, FRAME_S) * 1.5, self.largest, MIN_WINDOW_BYTES)

    def _moving(self) -> tuple[int, int, int, int] | None:
        hot = np.argwhere(self.hits >= HOT_HITS)
        if len(hot) < MIN_VIDEO_TILES:
            return None
        (ty0, tx0), (ty1, tx1) = hot.min(axis=0), hot.max(axis=0) + 1
        x0, y0 = tx0 * MOTION_TILE, ty0 * MOTION_TILE
        x1, y1 = min(self.width, tx1 * MOTION_TILE), min(self.height, ty1 * MOTION_TILE)
        return x0, y0, (x1 - x0) & ~1, (y1 - y0) & ~1

    def update(self, now: float) -> list[bytes]:
        """The rectangles of the next update (empty: nothing to send now)."""
        rects: list[bytes] = []
        if self.resized is not None:
            rects.append(self.resized)
            self.resized = None
        if self.cursor is not None:
            rects.append(self.cursor)
            self.cursor = None
        moving = self._moving()
        video = self.video
        if moving is not None and (video is None or not _inside(moving, (video.x, video.y, video.w, video.h))):
            box = moving if video is None else _union(moving, (video.x, video.y, video.w, video.h))
            video = self.video = Video(*box, crf=self.crf)
        if video is not None:
            # The tiles the video covers whole: a tile it cuts (at an edge of the screen whose
            # size is no multiple of the tile) always goes losslessly, and never keeps the
            # video from resting.
            vy0, vy1 = -(-video.y // TILE), (video.y + video.h) // TILE
            vx0, vx1 = -(-video.x // TILE), (video.x + video.w) // TILE
            inside = self.dirty[vy0:vy1, vx0:vx1]
            if inside.any():
                self.still_since = now
                if now - self.last_video_at >= FRAME_S * 0.8:
                    video = self._adapt(now, video)
                    data = video.encode(self.fb[video.y : video.y + video.h, video.x : video.x + video.w])
                    rects.append(struct.pack(">HHHHiII", video.x, video.y, video.w, video.h, H264, len(data),
                                             1 if video.fresh else 0) + data)  # fmt: skip
                    video.fresh = False
                    self.last_video_at = now
                    self.video_sent.append(now)
                    self.stats["h264"] += 1
                    self.dirty[vy0:vy1, vx0:vx1] = False  # the tiles it cuts go with Zlib below
            elif now - self.still_since >= REST_S:
                # At rest: the lossy picture is replaced by the exact one, and its tiles'
                # motion forgotten (what moves again starts a new video).
                self.damage(video.x, video.y, video.w, video.h)
                self.recent[:] = False
                m = MOTION_TILE
                self.hits[video.y // m : -(-(video.y + video.h) // m), video.x // m : -(-(video.x + video.w) // m)] = 0
                self.video = video = None
        if video is not None:
            # Tiles the video covers whole wait for its next frame; the rest goes now.
            saved = self.dirty[vy0:vy1, vx0:vx1].copy()
            self.dirty[vy0:vy1, vx0:vx1] = False
            rects += self._lossless()
            self.dirty[vy0:vy1, vx0:vx1] = saved
        else:
            rects += self._lossless()
        return rects

    def _lossless(self) -> list[bytes]:
        rects = []
        for x, y, w, h in _runs(self.dirty):
            x, y = x * TILE, y * TILE
            w, h = min(w * TILE, self.width - x), min(h * TILE, self.height - y)
            pixels = _convert(self.fb[y : y + h, x : x + w], self.server_format, self.client_format)
            data = self.zlib.compress(pixels.tobytes()) + self.zlib.flush(zlib.Z_SYNC_FLUSH)  # type: ignore[attr-defined]
            rects.append(struct.pack(">HHHHiI", x, y, w, h, ZLIB, len(data)) + data)
            self.stats["zlib"] += 1
        self.dirty[:] = False
        return rects

    def _adapt(self, now: float, video: Video) -> Video:
        """The video's quality for the link: the same encoder, or a new one at a new CRF."""
        while self.video_sent and self.video_sent[0] <= now - 1.0:
            self.video_sent.popleft()
        if now - self.adapted_at < ADAPT_S:
            return video
        if now - self.held_at < ADAPT_S and len(self.video_sent) < TARGET_FPS and self.crf < CRF_WORST:
            self.crf = min(CRF_WORST, self.crf + CRF_UP)
        elif now - max(self.held_at, self.adapted_at) >= RELAX_S and self.crf > CRF_BEST:
            self.crf = max(CRF_BEST, self.crf - CRF_DOWN)
        else:
            return video
        self.adapted_at = now
        if video.crf == self.crf:
            return video
        log.debug("video at CRF %d", self.crf)
        self.video = Video(video.x, video.y, video.w, video.h, crf=self.crf)
        return self.video

    def fence_answered(self, fence_id: int, now: float) -> None:
        sent = self.in_flight.pop(fence_id, None)
        if sent is None:
            return
        self.min_rtt = min(self.min_rtt, now - sent[0])
        self.answers_since = min(self.answers_since, now)
        self.answered.append((now, sent[1]))
        self.largest = max((size for _, size in self.answered), default=0)


def _inside(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] >= b[0] and a[1] >= b[1] and a[0] + a[2] <= b[0] + b[2] and a[1] + a[3] <= b[1] + b[3]


def _union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
    return x0, y0, (x1 - x0) & ~1, (y1 - y0) & ~1


def _runs(dirty: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Dirty tiles as rectangles (in tiles): runs along each row, stacked where rows agree."""
    out: list[list[int]] = []
    open_: dict[tuple[int, int], list[int]] = {}
    for ty in range(dirty.shape[0]):
        row = dirty[ty]
        if not row.any():
            open_ = {}
            continue
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row.view(np.int8), [0]))))
        now: dict[tuple[int, int], list[int]] = {}
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            key = (int(start), int(stop))
            rect = open_.get(key)
            if rect is not None:
                rect[3] += 1
            else:
                rect = [key[0], ty, key[1] - key[0], 1]
                out.append(rect)
            now[key] = rect
        open_ = now
    return [(r[0], r[1], r[2], r[3]) for r in out]


def _convert(words: np.ndarray, src: PixelFormat, dst: PixelFormat) -> np.ndarray:
    if src == dst:
        return words
    r, g, b = ((words >> s) & 255 for s in src.shifts)
    out = (r << dst.shifts[0]) | (g << dst.shifts[1]) | (b << dst.shifts[2])
    return out.astype(">u4" if dst.big_endian else "<u4")


# ---------------------------------------------------------------- the connection


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: str,
                 password: str) -> None:  # fmt: skip
        self.reader, self.writer = reader, writer
        self.upstream, self.password = upstream, password

    async def run(self) -> None:
        up_reader, up_writer = await _open(self.upstream)
        try:
            server_init = await upstream_handshake(up_reader, up_writer, self.password)
            await client_handshake(self.reader, self.writer, server_init, self.password)
            width, height = struct.unpack(">HH", server_init[:4])
            server_format = PixelFormat.parse(server_init[4:20])
            client_format = server_format
            held = bytearray()  # the client's messages before it named its encodings
            while True:
                kind, message = await _client_message(self.reader)
                held += message
                if kind == 0:
                    client_format = PixelFormat.parse(message[4:20])
                elif kind == 2:
                    count = struct.unpack(">H", message[2:4])[0]
                    encodings = struct.unpack(f">{count}i", message[4:])
                    break
            native = server_format.plain and not server_format.big_endian and server_format.shifts == (16, 8, 0)
            if H264 in encodings and native and client_format.plain:
                log.info("video path for a client of %dx%d", width, height)
                session = Session(width, height, server_format, client_format)
                await self._video(session, up_reader, up_writer, encodings)
            else:
                log.info("relaying the server's stream (the client offers no H.264 or another pixel format)")
                up_writer.write(bytes(held))
                await _relay(self.reader, self.writer, up_reader, up_writer)
        finally:
            up_writer.close()
            self.writer.close()

    async def _video(self, s: Session, up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter,
                     encodings: tuple[int, ...]) -> None:  # fmt: skip
        asked = [RAW] + [e for e in (CURSOR, DESKTOP_SIZE, EXTENDED_DESKTOP_SIZE, EXTENDED_CLIPBOARD) if e in encodings]
        up_writer.write(struct.pack(f">BxH{len(asked)}i", 2, len(asked), *asked))
        up_writer.write(struct.pack(">BBHHHH", 3, 0, 0, 0, s.width, s.height))
        if CONTINUOUS_UPDATES in encodings:
            self.writer.write(b"\x96")  # EndOfContinuousUpdates: the server supports them
        tasks = [asyncio.create_task(t) for t in (self._from_server(s, up_reader, up_writer),
                                                  self._from_client(s, up_writer), self._sender(s))]  # fmt: skip
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()
        finally:
            for t in tasks:
                t.cancel()
            log.info("video path closed: %s", s.stats)

    async def _from_server(self, s: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        bpp = s.server_format.bpp // 8
        while True:
            kind = (await reader.readexactly(1))[0]
            if kind == 0:
                (count,) = struct.unpack(">xH", await reader.readexactly(3))
                for _ in range(count):
                    x, y, w, h, encoding = struct.unpack(">HHHHi", await reader.readexactly(12))
                    if encoding == RAW:
                        data = await reader.readexactly(w * h * bpp)
                        s.fb[y : y + h, x : x + w] = np.frombuffer(data, "<u4").reshape(h, w)
                        s.damage(x, y, w, h)
                    elif encoding in (DESKTOP_SIZE, EXTENDED_DESKTOP_SIZE):
                        # A new size (the owner's window asked for it, or another viewer's):
                        # the copy starts again at that size, the client is told first.
                        screens = b""
                        if encoding == EXTENDED_DESKTOP_SIZE:
                            head = await reader.readexactly(4)
                            screens = head + await reader.readexactly(16 * head[0])
                        if (w, h) != (s.width, s.height):  # (a refused request keeps the size)
                            s.resize(w, h)
                        s.resized = struct.pack(">HHHHi", x, y, w, h, encoding) + screens
                    elif encoding == CURSOR:
                        data = await reader.readexactly(w * h * bpp + (w + 7) // 8 * h)
                        shape = np.frombuffer(data[: w * h * bpp], "<u4").reshape(h, w)
                        pixels = _convert(shape, s.server_format, s.client_format).tobytes()
                        s.cursor = struct.pack(">HHHHi", x, y, w, h, CURSOR) + pixels + data[w * h * bpp :]
                    else:
                        raise RfbError(f"the server sent encoding {encoding}")
                s.end_of_server_update()
                writer.write(struct.pack(">BBHHHH", 3, 1, 0, 0, s.width, s.height))
            elif kind == 2:  # bell
                self.writer.write(b"\x02")
            elif kind == 3:  # clipboard
                head = await reader.readexactly(7)
                length = abs(struct.unpack(">i", head[3:7])[0])
                self.writer.write(b"\x03" + head + await reader.readexactly(length))
            elif kind == 150:
                continue
            elif kind == 248:
                head = await reader.readexactly(8)
                await reader.readexactly(head[7])
            else:
                raise RfbError(f"unexpected server message {kind}")

    async def _from_client(self, s: Session, up_writer: asyncio.StreamWriter) -> None:
        while True:
            kind, message = await _client_message(self.reader)
            if kind in (4, 5, 6):  # keys, pointer, clipboard: the server's
                up_writer.write(message)
            elif kind == 3:
                if message[1] == 0:  # not incremental: everything again
                    s.damage(0, 0, s.width, s.height)
                s.wants = True
                s.changed.set()
            elif kind == 150:
                s.continuous = bool(message[1])
                if not s.continuous:
                    self.writer.write(b"\x96")
                s.changed.set()
            elif kind == 248:
                (fence_id,) = struct.unpack(">I", message[9:13].ljust(4, b"\0"))
                s.fence_answered(fence_id, time.monotonic())
                s.changed.set()
            elif kind == 0:
                fmt = PixelFormat.parse(message[4:20])
                if not fmt.plain:
                    raise RfbError("the client changed to a pixel format the video path does not handle")
                s.client_format = fmt
            elif kind == 251:  # the owner's window size: the server's to decide
                up_writer.write(message)
            elif kind == 2:
                continue  # the levels: the video paces itself by the link
            # Other messages (xvp, QEMU) are not offered on the video path.

    async def _sender(self, s: Session) -> None:
        while True:
            # While a video runs, look again every frame: its next frame may be due, or it rests.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(s.changed.wait(), FRAME_S / 2 if s.video is not None else None)
            s.changed.clear()
            now = time.monotonic()
            if not s.may_send(now) or not (s.dirty.any() or s.cursor is not None or s.video is not None
                                        or s.resized is not None):  # fmt: skip
                continue
            rects = s.update(now)
            if not rects:
                continue
            body = b"".join(rects)
            self.writer.write(struct.pack(">BxH", 0, len(rects)) + body)
            s.stats["updates"] += 1
            s.wants = False
            if s.continuous:
                s.fence_id += 1
                s.in_flight[s.fence_id] = (now, len(body))
                self.writer.write(struct.pack(">BxxxIB", 248, FENCE_REQUEST, 4) + struct.pack(">I", s.fence_id))
            await self.writer.drain()


async def _client_message(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    kind = (await reader.readexactly(1))[0]
    fixed = {0: 19, 3: 9, 4: 7, 5: 5, 150: 9, 250: 3}
    if kind in fixed:
        return kind, bytes([kind]) + await reader.readexactly(fixed[kind])
    if kind == 2:
        head = await reader.readexactly(3)
        return kind, bytes([kind]) + head + await reader.readexactly(4 * struct.unpack(">H", head[1:3])[0])
    if kind == 6:
        head = await reader.readexactly(7)
        length = abs(struct.unpack(">i", head[3:7])[0])
        if length > 16 * 1024 * 1024:
            raise RfbError("clipboard text too large")
        return kind, bytes([kind]) + head + await reader.readexactly(length)
    if kind == 248:
        head = await reader.readexactly(8)
        return kind, bytes([kind]) + head + await reader.readexactly(head[7])
    if kind == 251:
        head = await reader.readexactly(7)
        return kind, bytes([kind]) + head + await reader.readexactly(16 * head[5])
    if kind == 255:
        head = await reader.readexactly(1)
        return kind, bytes([kind]) + head + await reader.readexactly(10 if head[0] == 0 else 2)
    raise RfbError(f"unknown client message {kind}")


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up_reader: asyncio.StreamReader,
                 up_writer: asyncio.StreamWriter) -> None:  # fmt: skip
    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(1 << 16):
            dst.write(data)
            await dst.drain()

    tasks = [asyncio.create_task(pipe(reader, up_writer)), asyncio.create_task(pipe(up_reader, writer))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


async def serve(listen: str, upstream: str, password: str) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await Connection(reader, writer, upstream, password).run()
        except (asyncio.IncompleteReadError, ConnectionError, RfbError) as e:
            log.info("connection ended: %s", e or type(e).__name__)

    if listen.startswith("/"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(listen)
        old = os.umask(0o177)  # as private as the server's own socket
        try:
            server = await asyncio.start_unix_server(handle, listen, limit=1 << 22)
        finally:
            os.umask(old)
    else:
        host, _, port = listen.rpartition(":")
        server = await asyncio.start_server(handle, host, int(port), limit=1 << 22)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", required=True, help="a unix socket's path, or HOST:PORT")
    parser.add_argument("--upstream", required=True, help="the VNC server: a unix socket's path, or HOST:PORT")
    parser.add_argument("--password-file", help="the VNC server's password file (vncpasswd's format)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s videoproxy %(message)s")
    with contextlib.suppress(OSError, AttributeError):  # the name the session's activity report leaves out
        ctypes.CDLL(None).prctl(15, PROCESS_NAME, 0, 0, 0)  # PR_SET_NAME
    password = read_password_file(args.password_file) if args.password_file else ""
    asyncio.run(serve(args.listen, args.upstream, password))


if __name__ == "__main__":
    main()
