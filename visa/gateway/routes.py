"""The gateway's Starlette routes, mounted by ``visa.asgi`` before the Flask app."""

from __future__ import annotations

from flask import Flask
from starlette.routing import BaseRoute, Route, WebSocketRoute

from visa.gateway.common import Gateway, GatewayConfig
from visa.gateway.desktop import DesktopEndpoint
from visa.gateway.jupyter import JupyterProxy

HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def gateway_routes(flask_app: Flask, config: GatewayConfig | None = None) -> list[BaseRoute]:
    gateway = Gateway(flask_app, config)
    jupyter = JupyterProxy(gateway)
    return [
        WebSocketRoute("/ws/desktop/{uid}", DesktopEndpoint(gateway)),
        Route("/jupyter/{uid}", jupyter.root, methods=HTTP_METHODS),
        Route("/jupyter/{uid}/{path:path}", jupyter.http, methods=HTTP_METHODS),
        WebSocketRoute("/jupyter/{uid}/{path:path}", jupyter.websocket),
    ]
