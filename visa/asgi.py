"""The process users talk to: one event loop for the desktop gateway and Jupyter proxy,
with the Flask app (pages and REST API) mounted for everything else.

Websocket relays live on the event loop because a thread per connection inside a WSGI
app is several times slower and heavier; Flask requests run in a thread pool.
"""

from __future__ import annotations

from a2wsgi import WSGIMiddleware
from flask import Flask
from starlette.applications import Starlette
from starlette.routing import Mount

from visa.settings import Settings
from visa.web.app import create_app


def build_asgi(flask_app: Flask) -> Starlette:
    routes: list = []
    try:
        from visa.gateway.routes import gateway_routes

        routes.extend(gateway_routes(flask_app))
    except ImportError:  # the gateway package is optional while it is being built
        pass
    routes.append(Mount("/", app=WSGIMiddleware(flask_app, workers=16)))  # type: ignore[arg-type]
    return Starlette(routes=routes)


def create_asgi_app(settings: Settings | None = None) -> Starlette:
    return build_asgi(create_app(settings))
