"""The gateway's Starlette routes, mounted by ``visa.asgi`` before the Flask app.

The user-content hosts come first: whatever their path, they never reach visa's routes."""

from __future__ import annotations

from flask import Flask
from starlette.routing import BaseRoute, WebSocketRoute

from visa.gateway.common import Gateway, GatewayConfig
from visa.gateway.desktop import DesktopEndpoint
from visa.gateway.jupyter import JupyterProxy
from visa.gateway.viewlink import ViewLinkEndpoint
from visa.gateway.webservice import WebServiceProxy


def gateway_routes(flask_app: Flask, config: GatewayConfig | None = None) -> list[BaseRoute]:
    gateway = Gateway(flask_app, config)
    return [
        *WebServiceProxy(gateway).routes(),  # <uid>-<name>: before <uid>, whose pattern it also fits
        *JupyterProxy(gateway).routes(),
        WebSocketRoute("/ws/desktop/{uid}", DesktopEndpoint(gateway)),
        WebSocketRoute("/ws/view", ViewLinkEndpoint(gateway)),
    ]
