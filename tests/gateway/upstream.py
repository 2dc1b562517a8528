"""A hostile stand-in for an instance's Jupyter server: a real HTTP and websocket server on a
loopback port (uvicorn in a thread) that records what reaches it and answers as asked.

Paths (under any prefix): ``.../slow`` answers after ``slow_seconds``; ``.../stall`` sends a
little of its body and then nothing; ``.../bomb`` is a page compressed from ``bomb_bytes``
bytes (a gzip bomb); anything else answers ``{"ok": true}``. Websockets echo.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


@dataclass
class HostileUpstream:
    port: int = 0
    slow_seconds: float = 30.0
    bomb_bytes: int = 1024**3
    headers: list[dict[str, str]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    server: Any = None

    @property
    def connections(self) -> int:
        """TCP connections open to this server now."""
        return len(self.server.server_state.connections)

    async def _http(self, request: Request) -> Response:
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        path = request.url.path
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if path.endswith("/slow"):
                await asyncio.sleep(self.slow_seconds)
            elif path.endswith("/stall"):
                return StreamingResponse(self._stall(), media_type="application/octet-stream")
            elif path.endswith("/bomb"):
                body = _bomb(self.bomb_bytes)
                return Response(body, media_type="text/html", headers={"Content-Encoding": "gzip"})
            return JSONResponse({"ok": True})
        finally:
            self.in_flight -= 1

    async def _stall(self) -> AsyncIterator[bytes]:
        yield b"begun"
        await asyncio.sleep(3600)

    async def _ws(self, websocket: WebSocket) -> None:
        self.headers.append({k.lower(): v for k, v in websocket.headers.items()})
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect:
            pass

    def app(self) -> Starlette:
        methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
        return Starlette(routes=[WebSocketRoute("/{path:path}", self._ws), Route("/{path:path}", self._http,
                                                                                 methods=methods)])


_BOMBS: dict[int, bytes] = {}


def _bomb(size: int) -> bytes:
    """``size`` bytes of one letter, gzipped (about 1 KB per MB), made once per size."""
    if size not in _BOMBS:
        z = zlib.compressobj(9, zlib.DEFLATED, 31)
        block = b"<p>" + b"A" * (1024 * 1024 - 3)
        parts = [z.compress(block) for _ in range(size // len(block))]
        parts.append(z.flush())
        _BOMBS[size] = b"".join(parts)
    return _BOMBS[size]


@contextmanager
def hostile_upstream(**options: Any) -> Iterator[HostileUpstream]:
    upstream = HostileUpstream(**options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    upstream.port = sock.getsockname()[1]
    config = uvicorn.Config(upstream.app(), log_level="warning", lifespan="off", timeout_graceful_shutdown=1,
                            limit_concurrency=None, backlog=2048)
    server = uvicorn.Server(config)
    upstream.server = server
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the upstream did not start"
        time.sleep(0.02)
    try:
        yield upstream
    finally:
        server.should_exit = True
        server.force_exit = True
        thread.join(10)
        sock.close()
