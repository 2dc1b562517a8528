"""``/ws/view?token=...``: a public view link's desktop, relayed view only.

The link is the holder's only credential: no login session, no member row, no connect token.
The relay is the desktop's (``desktop.DesktopSession``) with its input filter fixed to view
only: key, pointer, clipboard and resize messages from the browser are dropped here, at the
gateway, whatever the page sends, and the desktop's clipboard never reaches the viewer. The
link is re-checked every ``activity_seconds`` and at its expiry: once revoked or expired, the
socket closes (4403). A viewer is not activity: watching keeps no machine alive.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from visa.clock import Clock
from visa.errors import VisaError
from visa.gateway import service
from visa.gateway.common import Gateway, error_body, log, refuse, same_origin
from visa.gateway.desktop import CLOSE_REVOKED, DesktopSession, relay
from visa.gateway.relay import Upstream
from visa.instances.models import MemberRole
from visa.sharing import viewlinks


class LinkViewSession(DesktopSession):
    def __init__(self, gateway: Gateway, receive: Receive, send: Send, grant: service.Grant, upstream: Upstream,
                 server_init: bytes, *, link_id: int, expires_at: datetime) -> None:
        super().__init__(gateway, receive, send, grant, upstream, server_init)
        self.link_id = link_id
        self.expires_at = expires_at

    async def watch(self) -> None:
        """Re-check the link every ``activity_seconds``, and at its expiry; the filter stays view only."""
        config = self.gateway.config
        while True:
            left = (self.expires_at - self.gateway.now()).total_seconds()
            await asyncio.sleep(max(0.0, min(config.activity_seconds, left)))
            try:
                expires_at = await self.gateway.db(viewlinks.view_link_valid, self.gateway.clock, self.link_id)
            except Exception:  # the database may be briefly away: the expiry still holds
                log.exception("view link %s check failed", self.link_id)
                expires_at = self.expires_at if self.expires_at > self.gateway.now() else None
            if expires_at is None:
                self.close_code, self.close_reason = CLOSE_REVOKED, "the link was revoked or has expired"
                log.info("closing view link %s of instance %s: revoked or expired", self.link_id,
                         self.grant.instance_id)
                return
            self.expires_at = expires_at


def _open(session: Session, clock: Clock, token: str) -> tuple[service.Grant, int, datetime]:
    viewing = viewlinks.open_view_link(session, clock, token)
    grant = service.Grant(user_id=0, instance_id=viewing.instance.id, role=MemberRole.GUEST, view_only=True,
                          target=service.desktop_target(viewing.instance), clipboard_to_viewers=False)
    return grant, viewing.link_id, viewing.expires_at


class ViewLinkEndpoint:
    """The ASGI app of ``/ws/view``."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await view(self.gateway, scope, receive, send)


async def view(gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    websocket = WebSocket(scope, receive, send)
    token = websocket.query_params.get("token", "")
    if not same_origin(websocket.headers, gateway.services.settings.base_url):
        await refuse(websocket, 403, {"error": "forbidden", "message": "cross-site websocket"})
        return
    try:
        grant, link_id, expires_at = await gateway.db(_open, gateway.clock, token)
    except VisaError as exc:
        body, status = error_body(exc)
        await refuse(websocket, 403 if status == 401 else status, body)
        return
    # Counted as the link's: one link takes no more of a gateway than one user does.
    viewer = ("view-link", link_id)
    refusal = gateway.admit(viewer, grant.instance_id)
    if refusal is not None:
        await refuse(websocket, *refusal)
        return
    try:
        def make_session(*args: Any) -> DesktopSession:
            return LinkViewSession(*args, link_id=link_id, expires_at=expires_at)

        await relay(gateway, websocket, receive, send, grant, make_session, presence_row=False)
    finally:
        gateway.leave(viewer, grant.instance_id)
