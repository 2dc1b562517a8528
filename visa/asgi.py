"""The process users talk to: one event loop for the desktop gateway and Jupyter proxy,
with the Flask app (pages and REST API) mounted for everything else.

Websocket relays live on the event loop because a thread per connection inside a WSGI
app is several times slower and heavier; Flask requests run in a thread pool.
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

        services = flask_app.extensions["visa"]
        worker = Worker(services)
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


def build_asgi(flask_app: Flask, *, background: bool = False) -> Starlette:
    routes: list = []
    try:
        from visa.gateway.routes import gateway_routes

        routes.extend(gateway_routes(flask_app))
    except ImportError:  # the gateway package is optional while it is being built
        pass
    routes.extend(event_routes(flask_app))
    routes.append(Mount("/", app=WSGIMiddleware(flask_app, workers=16)))  # type: ignore[arg-type]
    return Starlette(routes=routes, lifespan=_lifespan(flask_app, background))


def create_asgi_app(settings: Settings | None = None) -> Starlette:
    """The served application, with its background worker."""
    return build_asgi(create_app(settings), background=True)
