"""The upstream side of the gateway: the desktop relay's connection, built for throughput,
and how HTTP and websockets reach an instance's TCP port or unix socket.

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
import hashlib
import socket
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect, unix_connect

# Read no more from the VNC server while this much waits for the browser.
HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1024 * 1024
# Largest websocket message made by joining queued chunks.
MAX_MESSAGE = 256 * 1024


class UpstreamClosed(ConnectionError):
    pass


class Upstream(asyncio.Protocol):
    """One connection (TCP or unix socket): exact reads during a handshake, whole chunks once relaying."""

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


async def open_upstream(host: str, port: int, timeout: float = 5.0, socket_path: str | None = None) -> Upstream:
    """Connect to host:port, or to the unix socket ``socket_path`` when the target has one."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        if socket_path:
            _, protocol = await loop.create_unix_connection(Upstream, socket_path)
        else:
            _, protocol = await loop.create_connection(Upstream, host, port)
    return protocol


# ---------------------------------------------------------------------- HTTP and websockets

# Unix-socket upstreams get a made-up host name (RFC 6761 ``.invalid``: never resolved) that
# the transport maps back to the socket, so one client serves TCP and socket targets alike.
_SOCKET_HOSTS: dict[str, str] = {}
SOCKET_DOMAIN = ".socket.invalid"


def http_origin(target: Any) -> str:
    """``http://host:port`` of a target, or the made-up origin of its unix socket."""
    if not target.socket:
        return f"http://{target.host}:{target.port}"
    host = hashlib.sha256(target.socket.encode()).hexdigest()[:24] + SOCKET_DOMAIN
    if len(_SOCKET_HOSTS) > 4096:
        _SOCKET_HOSTS.clear()  # targets are looked up again at the next request
    _SOCKET_HOSTS[host] = target.socket
    return f"http://{host}"


def ws_origin(target: Any) -> str:
    return "ws" + http_origin(target)[4:]


class UpstreamTransport(httpx.AsyncBaseTransport):
    """TCP for ordinary hosts, one pooled unix-socket transport per socket host."""

    def __init__(self, limits: httpx.Limits) -> None:
        self._limits = limits
        self._tcp = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
        self._sockets: dict[str, httpx.AsyncHTTPTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if not host.endswith(SOCKET_DOMAIN):
            return await self._tcp.handle_async_request(request)
        path = _SOCKET_HOSTS.get(host)
        if path is None:
            raise httpx.ConnectError(f"no socket for {host}", request=request)
        transport = self._sockets.get(path)
        if transport is None:
            transport = self._sockets[path] = httpx.AsyncHTTPTransport(uds=path, limits=self._limits)
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self._tcp.aclose()
        for transport in self._sockets.values():
            await transport.aclose()
        self._sockets.clear()


async def ws_connect(target: Any, url: str, **kwargs: Any) -> ClientConnection:
    """A websocket to the target: over its unix socket when it has one."""
    if target.socket:
        return await unix_connect(target.socket, url, **kwargs)
    return await connect(url, **kwargs)
