"""The processes users talk to.

* ``create_asgi_app``: the web process. Event streams on the event loop, the Flask app (pages
  and REST API) in a thread pool for everything else and, when ``gateway.embedded`` (the
  embedded setup, ``visa run``), the gateway too.
* ``create_gateway_app``: ``visa gateway``, the long-lived connections alone: the desktop relay
  (``/ws/``), the instances' web proxies (the user-content hosts) and the event streams
  (``/api/events``), so that deploying or restarting the web replicas drops no open desktop
  and waits for no stream. nginx routes ``/ws/``, ``/api/events`` and the user-content domain
  to it; the web replicas are then plain WSGI (``visa web``, visa.serving).

Websocket relays live on the event loop because a thread per connection inside a WSGI
app is several times slower and heavier.

The WSGI app gets a thread only once its request's body is all there (``BoundedBodies``): read
on the event loop within ``request_body_seconds`` and ``max_request_bytes`` (408, 413), so
clients sending bodies a byte at a time hold connections, not threads. File transfers stream
their bodies (gigabytes) in a pool of threads of their own (``transfers.workers``), each read
bounded by ``transfers.timeout_seconds``: they never take the threads of pages and API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from a2wsgi import WSGIMiddleware
from flask import Flask
from starlette.applications import Starlette
from starlette.routing import Mount

from visa.settings import Settings
from visa.web.app import create_app
from visa.web.events import event_routes


def _lifespan(flask_app: Flask, background: bool):
    """Starts the in-process worker (and the scheduler, where this process may lead)."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if not background:
            yield
            return
        from visa.commands.worker import Worker
        from visa.scheduler.lease import follower_lease

        services = flask_app.extensions["visa"]
        worker = Worker(services, lease=follower_lease(services.database, services.clock,
                                                       services.settings.scheduler.lease_seconds))
        worker.start()
        scheduler = None
        if services.settings.scheduler.enabled_in_web:
            try:
                from visa.scheduler.runner import start_in_background
            except ImportError:
                start_in_background = None
            if start_in_background is not None:
                scheduler = start_in_background(services)
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.stop()
            worker.stop()

    return lifespan


WEB_WORKERS = 16  # threads for pages and the REST API
# Where bodies are files streamed to an instance (visa.transfers.api), not read whole.
TRANSFER_PATH = re.compile(r"^/api/instances/[^/]+/files(/|$)")

Scope = dict[str, Any]
Receive = Any
Send = Any


class _TooLarge(Exception):
    pass


class _Gone(Exception):
    pass


async def _answer(send: Send, status: int, error: str, message: str) -> None:
    body = json.dumps({"error": error, "message": message, "field": "body"}).encode()
    # The rest of the body is not read: the connection cannot carry another request.
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


class BoundedBodies:
    """The WSGI apps behind it see a request only once its body is read, on the event loop,
    whole, within ``seconds`` and ``max_bytes``; transfers go to ``transfers`` with their bodies
    streamed, each read within ``idle_seconds``."""

    def __init__(self, app: Any, transfers: Any, *, max_bytes: int, seconds: float, idle_seconds: float) -> None:
        self.app, self.transfers = app, transfers
        self.max_bytes, self.seconds, self.idle_seconds = max_bytes, seconds, idle_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if TRANSFER_PATH.match(scope["path"]):
            await self.transfers(scope, self._idle_bounded(receive), send)
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        declared = headers.get(b"content-length", b"0")
        if not chunked and declared in (b"", b"0"):
            await self.app(scope, receive, send)  # no body: nothing to wait for
            return
        if not chunked and declared.isdigit() and int(declared) > self.max_bytes:
            await _answer(send, 413, "too_large", f"the request body is over {self.max_bytes} bytes")
            return
        try:
            body = await asyncio.wait_for(self._read(receive), self.seconds)
        except TimeoutError:
            await _answer(send, 408, "timeout", f"the request body did not arrive within {self.seconds:g} s")
            return
        except _TooLarge:
            await _answer(send, 413, "too_large", f"the request body is over {self.max_bytes} bytes")
            return
        except _Gone:
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()  # type: ignore[no-any-return]
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Gone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise _TooLarge
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    def _idle_bounded(self, receive: Receive) -> Receive:
        async def bounded() -> dict[str, Any]:
            try:
                return await asyncio.wait_for(receive(), self.idle_seconds)  # type: ignore[no-any-return]
            except TimeoutError:  # the body ends here: the upload answers with how far it got
                return {"type": "http.request", "body": b"", "more_body": False}

        return bounded


def build_asgi(flask_app: Flask, *, background: bool = False, gateway: bool | None = None) -> Starlette:
    """The web process; with the gateway's routes when ``gateway`` (default: ``gateway.embedded``)."""
    routes: list = []
    if gateway is None:
        gateway = flask_app.extensions["visa"].settings.gateway.embedded
    if gateway:
        from visa.gateway.routes import gateway_routes

        routes.extend(gateway_routes(flask_app))
    routes.extend(event_routes(flask_app))
    settings = flask_app.extensions["visa"].settings
    wsgi = BoundedBodies(
        WSGIMiddleware(flask_app, workers=WEB_WORKERS),  # type: ignore[arg-type]
        WSGIMiddleware(flask_app, workers=settings.transfers.workers),  # type: ignore[arg-type]
        max_bytes=settings.max_request_bytes, seconds=settings.request_body_seconds,
        idle_seconds=settings.transfers.timeout_seconds,
    )
    routes.append(Mount("/", app=wsgi))
    return Starlette(routes=routes, lifespan=_lifespan(flask_app, background))


def create_asgi_app(settings: Settings | None = None) -> Starlette:
    """The served application, with its background worker."""
    from visa.serving import settle_heap

    app = build_asgi(create_app(settings), background=True)
    settle_heap()
    return app


def build_gateway(flask_app: Flask) -> Starlette:
    """The gateway process: the relay, the user-content hosts, the event streams, its health and
    metrics, nothing else.

    The Flask app is built for its settings, services and session signing; it serves no request."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from visa.gateway.routes import gateway_routes
    from visa.metrics import CONTENT_TYPE_LATEST, process_metrics

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok", "role": "gateway"})

    async def metrics(_request: Request) -> Response:
        return Response(process_metrics(), headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})

    async def not_found(_request: Request) -> Response:
        return JSONResponse({"error": "not_found", "message": "the gateway serves /ws/, /api/events and instance hosts only"},
                            status_code=404)

    return Starlette(routes=[
        *gateway_routes(flask_app),
        *event_routes(flask_app),
        Route("/health", health),
        Route("/metrics", metrics),
        Route("/{path:path}", not_found, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    ])


def create_gateway_app(settings: Settings | None = None) -> Starlette:
    """``visa gateway``: served by uvicorn with the relay's websocket protocol."""
    from visa.serving import settle_heap

    app = build_gateway(create_app(settings))
    settle_heap()
    return app
