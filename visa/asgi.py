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
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from a2wsgi import WSGIMiddleware
from flask import Flask
from starlette.applications import Starlette
from starlette.routing import Mount

from visa.settings import Settings
from visa.web.app import create_app
from visa.web.events import event_routes


def _lifespan(flask_app: Flask, background: bool):  # noqa: ANN202
    """Starts the in-process worker (and the scheduler, where this process may lead)."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if not background:
            yield
            return
        from visa.instances.worker import Worker
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


def build_asgi(flask_app: Flask, *, background: bool = False, gateway: bool | None = None) -> Starlette:
    """The web process; with the gateway's routes when ``gateway`` (default: ``gateway.embedded``)."""
    routes: list = []
    if gateway is None:
        gateway = flask_app.extensions["visa"].settings.gateway.embedded
    if gateway:
        from visa.gateway.routes import gateway_routes

        routes.extend(gateway_routes(flask_app))
    routes.extend(event_routes(flask_app))
    routes.append(Mount("/", app=WSGIMiddleware(flask_app, workers=16)))  # type: ignore[arg-type]
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
