"""The TCP side of the desktop relay, built for throughput.

An ``asyncio.Protocol`` rather than streams: in relay mode the bytes objects the event
loop reads (up to 256 KB each) go to the websocket as they are, without the copies a
``StreamReader`` makes; chunks that pile up while the browser is slow are joined into one
larger websocket message, and reading pauses when too much is queued (back-pressure on
the VNC server instead of memory growth).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket

# Read no more from the VNC server while this much waits for the browser.
HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1024 * 1024
# Largest websocket message made by joining queued chunks.
MAX_MESSAGE = 256 * 1024


class UpstreamClosed(ConnectionError):
    pass


class Upstream(asyncio.Protocol):
    """One TCP connection: exact reads during a handshake, whole chunks once relaying."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._relaying = False
        self._closed = False
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()

    # ------------------------------------------------------------------ protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are no asyncio.Transport subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:  # the loops set it too; keyboard latency matters more than packets
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._relaying:
            self._chunks.append(data)
            self._queued += len(data)
            if self._queued > HIGH_WATER and not self._reading_paused and self.transport is not None:
                self._reading_paused = True
                self.transport.pause_reading()
        else:
            self._buf += data
        self._wake()

    def eof_received(self) -> bool:
        self._closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._writable.set()
        self._wake()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # ------------------------------------------------------------------ reading

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def read_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if self._closed:
                raise UpstreamClosed(f"the server closed the connection ({len(self._buf)}/{n} bytes)")
            await self._wait()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def start_relay(self) -> None:
        """From now on, ``read_chunk`` hands out whatever arrives."""
        self._relaying = True
        if self._buf:
            self._chunks.append(bytes(self._buf))
            self._queued += len(self._buf)
            self._buf.clear()

    async def read_chunk(self) -> bytes | None:
        """The next bytes from the server (None at the end), joined up to ``MAX_MESSAGE``."""
        while not self._chunks:
            if self._closed:
                return None
            await self._wait()
        chunks = self._chunks
        data = chunks.popleft()
        if chunks and len(data) < MAX_MESSAGE:
            parts = [data]
            size = len(data)
            while chunks and size + len(chunks[0]) <= MAX_MESSAGE:
                part = chunks.popleft()
                parts.append(part)
                size += len(part)
            data = b"".join(parts)
        self._queued -= len(data)
        if self._reading_paused and self._queued < LOW_WATER and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    # ------------------------------------------------------------------ writing

    async def write(self, data: bytes) -> None:
        if self._closed or self.transport is None:
            raise UpstreamClosed("the server closed the connection")
        self.transport.write(data)
        await self._writable.wait()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_upstream(host: str, port: int, timeout: float = 5.0) -> Upstream:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, protocol = await loop.create_connection(Upstream, host, port)
    return protocol
