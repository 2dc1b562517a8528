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
import time
from collections.abc import AsyncIterator
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
# The map is bounded: the least recently named sockets go first (looked up again when needed).
_SOCKET_HOSTS: collections.OrderedDict[str, str] = collections.OrderedDict()
SOCKET_HOSTS_MAX = 4096
SOCKET_DOMAIN = ".socket.invalid"


def http_origin(target: Any) -> str:
    """``http://host:port`` of a target, or the made-up origin of its unix socket."""
    if not target.socket:
        return f"http://{target.host}:{target.port}"
    host = hashlib.sha256(target.socket.encode()).hexdigest()[:24] + SOCKET_DOMAIN
    _SOCKET_HOSTS[host] = target.socket
    _SOCKET_HOSTS.move_to_end(host)
    while len(_SOCKET_HOSTS) > SOCKET_HOSTS_MAX:
        _SOCKET_HOSTS.popitem(last=False)
    return f"http://{host}"


def ws_origin(target: Any) -> str:
    return "ws" + http_origin(target)[4:]


class _Pool:
    """One upstream's connections, and how many answers from it are still being read."""

    def __init__(self, transport: httpx.AsyncHTTPTransport) -> None:
        self.transport = transport
        self.in_flight = 0
        self.used_at = time.monotonic()


class _Counted(httpx.AsyncByteStream):
    """An upstream answer's body that gives its pool back when it is closed."""

    def __init__(self, stream: Any, pool: _Pool) -> None:
        self._stream = stream
        self._pool: _Pool | None = pool

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._pool is not None:
                self._pool.in_flight -= 1
                self._pool.used_at = time.monotonic()
                self._pool = None


class UpstreamTransport(httpx.AsyncBaseTransport):
    """One connection pool per upstream (an instance's host:port or unix socket), so that an
    instance holding all of its connections makes only its own requests wait (for the pool
    timeout of the request, then ``httpx.PoolTimeout``).

    The table of pools is bounded: past ``max_pools`` the least recently used pool with no
    answer in progress is closed, and so is any pool unused for ``idle_seconds``."""

    def __init__(self, connections: int, max_pools: int = 1024, idle_seconds: float = 300.0) -> None:
        self.connections = connections
        self.max_pools = max_pools
        self.idle_seconds = idle_seconds
        self._pools: collections.OrderedDict[str, _Pool] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._pools)

    def _pool(self, key: str, uds: str | None) -> _Pool:
        pool = self._pools.get(key)
        if pool is None:
            limits = httpx.Limits(max_connections=self.connections,
                                  max_keepalive_connections=min(self.connections, 8), keepalive_expiry=30)
            pool = self._pools[key] = _Pool(httpx.AsyncHTTPTransport(uds=uds, limits=limits, trust_env=False))
        self._pools.move_to_end(key)
        return pool

    async def _evict(self) -> None:
        """Close the pools beyond the bound (least recently used first) and the idle ones."""
        idle_before = time.monotonic() - self.idle_seconds
        over = len(self._pools) - self.max_pools
        for key, pool in list(self._pools.items()):
            if pool.in_flight:
                continue
            if over > 0 or pool.used_at < idle_before:
                del self._pools[key]
                over -= 1
                await pool.transport.aclose()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host.endswith(SOCKET_DOMAIN):
            path = _SOCKET_HOSTS.get(host)
            if path is None:
                raise httpx.ConnectError(f"no socket for {host}", request=request)
            pool = self._pool("unix:" + path, path)
        else:
            pool = self._pool(f"{host}:{request.url.port}", None)
        pool.in_flight += 1
        pool.used_at = time.monotonic()
        try:
            await self._evict()
            response = await pool.transport.handle_async_request(request)
        except BaseException:
            pool.in_flight -= 1
            raise
        response.stream = _Counted(response.stream, pool)
        return response

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), collections.OrderedDict()
        for pool in pools:
            await pool.transport.aclose()


async def ws_connect(target: Any, url: str, **kwargs: Any) -> ClientConnection:
    """A websocket to the target: over its unix socket when it has one."""
    if target.socket:
        return await unix_connect(target.socket, url, **kwargs)
    return await connect(url, **kwargs)
