"""``/ws/desktop/<uid>?token=...``: the browser's desktop, relayed to the instance's VNC server
(or, for a machine that offers RDP and no VNC, to the RDP bridge's, ``visa.gateway.rdp``).

1. The one-time token is spent (in a worker thread); nothing is accepted before that.
2. The gateway connects to the VNC server and authenticates with the instance secret.
3. The browser gets an RFB handshake with security None and the server's ServerInit.
4. Relay: server -> browser raw, in large messages; browser -> server cut into client
   messages, input dropped for view-only members. A watcher writes activity and re-checks
   access every ``activity_seconds``, closing the socket of a member who was removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from visa.catalogue.models import Protocol
from visa.errors import VisaError
from visa.gateway import rdp, service
from visa.gateway.common import Gateway, error_body, log, refuse, same_origin, session_binding
from visa.gateway.relay import Upstream, UpstreamClosed, open_upstream
from visa.gateway.rfb import (
    BrowserReader,
    ClientFilter,
    RfbError,
    ServerFilter,
    browser_handshake,
    server_handshake,
)
from visa.instances.models import ConnectionProtocol, MemberRole
from visa.metrics import RelayMeter
from visa.sharing import presence

CLOSE_NORMAL = 1000
DESKTOP_CLOSED = "the desktop closed the connection"
CLOSE_PROTOCOL = 1002
CLOSE_UPSTREAM = 1011
CLOSE_REVOKED = 4403  # access was withdrawn while connected
CLOSE_IDLE = 4408  # no keyboard or mouse for settings.lifetimes.untouched_tab_hours
CLOSE_OWNER_AWAY = 4409  # the owner left, and this instance admits its members only with the owner


class DesktopSession:
    def __init__(
        self,
        gateway: Gateway,
        receive: Receive,
        send: Send,
        grant: service.Grant,
        upstream: Upstream,
        server_init: bytes,
    ) -> None:
        self.gateway = gateway
        # The raw ASGI channels: the relay's per-message path goes through no wrapper.
        self.receive = receive
        self.send = send
        self.server_init = server_init
        self.grant = grant
        self.upstream = upstream
        # Every connection but the owner's is followed, to keep the clipboard from viewers
        # (a member's role may change while connected); the owner's is relayed untouched.
        self.server_filter = (
            None if grant.role == MemberRole.OWNER
            else ServerFilter(server_init, drop_clipboard=grant.view_only and not grant.clipboard_to_viewers)
        )
        self.filter = ClientFilter(view_only=grant.view_only, server=self.server_filter)
        self.seen = False
        self.last_input = time.monotonic()
        self.close_code = CLOSE_NORMAL
        self.close_reason = ""
        self.meter = RelayMeter("desktop")
        self.connection_id: int | None = None  # this socket's row of live connections (presence)

    async def _receive(self) -> bytes | None:
        message = await self.receive()
        if message["type"] == "websocket.disconnect":
            return None
        data = message.get("bytes")
        if data is None:
            data = (message.get("text") or "").encode("latin-1", errors="replace")
        return data  # type: ignore[no-any-return]

    async def _send(self, data: bytes) -> None:
        await self.send({"type": "websocket.send", "bytes": data})

    async def handshake(self) -> BrowserReader:
        reader = BrowserReader(self._receive)
        async with asyncio.timeout(self.gateway.config.handshake_timeout * 3):  # a person may be slow to load
            await browser_handshake(reader, self._send, self.server_init)
        return reader

    async def server_to_browser(self) -> None:
        upstream = self.upstream
        send = self.send
        meter = self.meter
        server_filter = self.server_filter
        while (data := await upstream.read_chunk()) is not None:
            if server_filter is not None:
                data = server_filter.feed(data)
                if not data:
                    continue
            await send({"type": "websocket.send", "bytes": data})
            meter.to_client += len(data)
        self.close_code, self.close_reason = CLOSE_NORMAL, DESKTOP_CLOSED

    async def browser_to_server(self, pending: bytes) -> None:
        flt = self.filter
        data: bytes | None = pending
        while data is not None:
            if data:
                self.seen = True
                out = flt.feed(data)
                if out:
                    await self.upstream.write(out)
                    self.meter.to_server += len(out)
                if flt.interacted:
                    self.last_input = time.monotonic()
            data = await self._receive()
        self.close_code = CLOSE_NORMAL

    async def watch(self) -> None:
        """Write activity, re-check access, end idle tabs: once per ``activity_seconds``."""
        config = self.gateway.config
        idle_limit = self.gateway.services.settings.lifetimes.untouched_tab_hours * 3600
        while True:
            await asyncio.sleep(config.activity_seconds)
            self.meter.flush()
            interacted, self.filter.interacted = self.filter.interacted, False
            seen, self.seen = self.seen, False
            now = self.gateway.now()
            try:
                may_input = await self.gateway.db(self._tick, now if seen or interacted else None, interacted)
            except Exception:  # the database may be briefly away; the desktop goes on
                log.exception("activity check failed for instance %s", self.grant.instance_id)
                continue
            if may_input == "waiting":
                self.close_code, self.close_reason = CLOSE_OWNER_AWAY, "waiting for the owner"
                log.info("closing desktop of instance %s for user %s: the owner left",
                         self.grant.instance_id, self.grant.user_id)
                return
            if may_input is None:
                self.close_code, self.close_reason = CLOSE_REVOKED, "access withdrawn"
                log.info(
                    "closing desktop of instance %s for user %s: access withdrawn",
                    self.grant.instance_id,
                    self.grant.user_id,
                )
                return
            self.filter.view_only = not may_input  # a member's role may change while connected
            if self.server_filter is not None:
                self.server_filter.drop_clipboard = not may_input and not self.grant.clipboard_to_viewers
            if time.monotonic() - self.last_input > idle_limit:
                self.close_code, self.close_reason = CLOSE_IDLE, "no input for too long"
                return

    def _tick(self, session, seen, interacted: bool) -> bool | str | None:
        if seen is not None:
            service.record_activity(session, self.grant.instance_id, seen, seen if interacted else None)
        if self.connection_id is not None:
            presence.heartbeat(session, self.gateway.clock, self.connection_id, self.gateway.connection_ttl)
        may = service.check_access(
            session,
            self.gateway.clock,
            self.grant.user_id,
            self.grant.instance_id,
            "instance.connect",
            self.grant.login,
        )
        if may is None and service.waiting_for_owner(
            session, self.gateway.clock, self.grant.user_id, self.grant.instance_id
        ):
            return "waiting"
        return may

    async def run(self, reader: BrowserReader) -> None:
        pending = bytes(reader.buffer)
        self.upstream.start_relay()
        tasks = [
            asyncio.create_task(self.server_to_browser()),
            asyncio.create_task(self.browser_to_server(pending)),
            asyncio.create_task(self.watch()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if isinstance(exc, RfbError):
                    self.close_code, self.close_reason = CLOSE_PROTOCOL, str(exc)[:120]
                elif isinstance(exc, UpstreamClosed):
                    self.close_code, self.close_reason = CLOSE_NORMAL, DESKTOP_CLOSED
                elif exc is not None:  # mostly the browser gone mid-send
                    log.debug("desktop relay of instance %s ended: %r", self.grant.instance_id, exc)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class DesktopEndpoint:
    """The ASGI app of ``/ws/desktop/{uid}``."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await desktop(self.gateway, scope, receive, send)


async def desktop(gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    websocket = WebSocket(scope, receive, send)
    uid = websocket.path_params["uid"]
    token = websocket.query_params.get("token", "")
    # Checked before the token is looked at: a cross-site page cannot spend it.
    if not same_origin(websocket.headers, gateway.services.settings.base_url):
        await refuse(websocket, 403, {"error": "forbidden", "message": "cross-site websocket"})
        return
    binding = session_binding(gateway.browser_session(websocket.cookies))
    try:
        grant: service.Grant = await gateway.db(
            service.consume_connect_token, gateway.clock, uid, token, binding
        )
    except VisaError as exc:
        body, status = error_body(exc)
        await refuse(websocket, 403 if status == 401 and token else status, body)
        return

    refusal = gateway.admit(grant.user_id, grant.instance_id)
    if refusal is not None:
        await refuse(websocket, *refusal)
        return
    try:
        await relay(gateway, websocket, receive, send, grant)
    finally:
        gateway.leave(grant.user_id, grant.instance_id)


SessionFactory = Callable[[Gateway, Receive, Send, service.Grant, Upstream, bytes], DesktopSession]


async def relay(gateway: Gateway, websocket: WebSocket, receive: Receive, send: Send, grant: service.Grant,
                make_session: SessionFactory = DesktopSession, *, presence_row: bool = True) -> None:
    """Connect to the desktop, accept the browser and relay until either side ends; ``presence_row``:
    the connection is shown among who is connected (a member's, not a view link's)."""
    config = gateway.config
    upstream: Upstream | None = None
    bridge: rdp.Bridge | None = None
    target = grant.target
    try:
        try:
            if target.protocol == Protocol.RDP:  # an RDP machine: through a bridge of its own
                bridge = await rdp.open_bridge(target.host, target.port, target.username, target.secret,
                                               target.screen, config.connect_timeout, target.keyboard_layout)
                upstream = bridge.upstream
            else:
                upstream = await open_upstream(target.host, target.port, config.connect_timeout, target.socket)
            async with asyncio.timeout(config.handshake_timeout):
                server_init = await server_handshake(upstream, target.secret)
        except rdp.BridgeUnavailable as exc:
            log.error("desktop of instance %s: %s", grant.instance_id, exc)
            await refuse(websocket, 502, {"error": "unavailable", "message": "the RDP bridge cannot run here"})
            return
        except (OSError, TimeoutError, RfbError) as exc:
            log.warning("desktop of instance %s unreachable: %s", grant.instance_id, type(exc).__name__)
            await refuse(websocket, 502, {"error": "unavailable", "message": "the desktop does not answer"})
            return
        wanted = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol="binary" if "binary" in wanted else None)
        session = make_session(gateway, receive, send, grant, upstream, server_init)
        try:
            with session.meter:
                reader = await session.handshake()
                if presence_row:
                    session.connection_id = await gateway.open_connection(
                        grant.instance_id, grant.user_id, grant.role, ConnectionProtocol.DESKTOP
                    )
                await session.run(reader)
        except (RfbError, TimeoutError) as exc:
            session.close_code, session.close_reason = CLOSE_PROTOCOL, str(exc)[:120] or "handshake timed out"
        finally:
            await gateway.close_connection(session.connection_id)
        if bridge is not None and session.close_reason == DESKTOP_CLOSED:
            # The RDP machine ended it: FreeRDP's exit status says why, in visa's words.
            reason = await bridge.ended()
            if reason is not None:
                session.close_code, session.close_reason = CLOSE_UPSTREAM, reason
                log.warning("desktop of instance %s: %s (FreeRDP exit status %s)", grant.instance_id, reason,
                            bridge.proc.returncode)
        with contextlib.suppress(Exception):  # the browser may be gone already
            await send(
                {"type": "websocket.close", "code": session.close_code, "reason": session.close_reason}
            )
    finally:
        if upstream is not None:
            upstream.close()
        if bridge is not None:
            await bridge.close()
