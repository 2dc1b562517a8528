"""What the desktop relay and the Jupyter proxy share: settings, database access in worker
threads, throttled activity, same-origin checks and refusals before a websocket opens."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from anyio import to_thread
from flask import Flask
from itsdangerous import BadSignature
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from visa.auth.sessions import login_session_hash
from visa.errors import VisaError, http_status
from visa.gateway import service
from visa.instances.models import ConnectionProtocol, MemberRole
from visa.services import Services
from visa.sharing import presence

log = logging.getLogger("visa.gateway")


@dataclass
class GatewayConfig:
    """Timings of the gateway (seconds). Tests shorten them."""

    # Activity is written, and access re-checked, at most this often per connection.
    activity_seconds: float = 15.0
    connect_timeout: float = 5.0
    handshake_timeout: float = 10.0
    # How long a Jupyter request may reuse the answer to "may this session use this Jupyter".
    auth_cache_seconds: float = 5.0
    # Largest websocket message relayed from or to a Jupyter server (bytes).
    ws_max_bytes: int = 32 * 1024 * 1024


class Counts:
    """How many of something each key holds now (in this process), under a limit."""

    def __init__(self) -> None:
        self._held: dict[Any, int] = {}

    def __getitem__(self, key: Any) -> int:
        return self._held.get(key, 0)

    def take(self, key: Any, limit: int) -> bool:
        """One more for ``key``, unless it holds ``limit`` already."""
        held = self._held.get(key, 0)
        if held >= limit:
            return False
        self._held[key] = held + 1
        return True

    def give_back(self, key: Any) -> None:
        held = self._held.get(key, 0) - 1
        if held > 0:
            self._held[key] = held
        else:
            self._held.pop(key, None)


class Gateway:
    """The running visa (database, clock, settings) as the websocket code sees it."""

    def __init__(self, flask_app: Flask, config: GatewayConfig | None = None) -> None:
        self.flask_app = flask_app
        self.config = config or GatewayConfig()
        self.services: Services = flask_app.extensions["visa"]
        self._last_write: dict[int, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.session_cookie: str = flask_app.config["SESSION_COOKIE_NAME"]
        self._session_max_age = int(flask_app.permanent_session_lifetime.total_seconds())
        self._serializer = flask_app.session_interface.get_signing_serializer(flask_app)  # type: ignore[attr-defined]
        # Open desktop and JupyterLab websockets, per user and per instance.
        self._open_by_user = Counts()
        self._open_by_instance = Counts()

    def admit(self, user_id: Hashable, instance_id: int) -> tuple[int, dict[str, object]] | None:
        """Count one more open websocket of this user to this instance, or say why not (the
        status and JSON body of the refusal): no user or instance takes all of a gateway."""
        limits = self.services.settings.gateway
        if not self._open_by_user.take(user_id, limits.max_connections_per_user):
            log.info("connection of user %s to instance %s refused: %s open", user_id, instance_id,
                     limits.max_connections_per_user)
            return 429, {"error": "rate_limited",
                         "message": f"too many open connections: at most {limits.max_connections_per_user} at once"}
        if not self._open_by_instance.take(instance_id, limits.max_connections_per_instance):
            self._open_by_user.give_back(user_id)
            log.info("connection of user %s to instance %s refused: the instance has %s open", user_id,
                     instance_id, limits.max_connections_per_instance)
            return 503, {"error": "unavailable", "message": "the instance has too many open connections "
                         f"(at most {limits.max_connections_per_instance}): try again later"}
        return None

    def leave(self, user_id: Hashable, instance_id: int) -> None:
        self._open_by_user.give_back(user_id)
        self._open_by_instance.give_back(instance_id)

    def browser_session(self, cookies: Mapping[str, str]) -> dict[str, Any] | None:
        """The contents of visa's session cookie, when it is valid and still fresh."""
        cookie = cookies.get(self.session_cookie)
        if not cookie or self._serializer is None:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=self._session_max_age)
        except BadSignature:
            return None
        return data if isinstance(data, dict) else None

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run bookkeeping beside a request without making it wait."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def clock(self):
        return self.services.clock

    def _in_transaction(self, fn: Any, *args: Any) -> Any:
        with self.services.database.unit_of_work() as session:
            return fn(session, *args)

    async def db(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(session, *args)`` in one transaction in a worker thread: the event loop
        that relays every desktop must never wait for the database."""
        return await to_thread.run_sync(self._in_transaction, fn, *args)

    def now(self) -> datetime:
        return self.clock.now()

    @property
    def connection_ttl(self) -> float:
        """How long a live-connection row outlives its last heartbeat: a few missed ticks."""
        return max(3 * self.config.activity_seconds, 5.0)

    async def open_connection(self, instance_id: int, user_id: int, role: MemberRole,
                              protocol: ConnectionProtocol) -> int | None:
        """Note an open socket for presence; None when the database is away (the socket goes on)."""
        try:
            return await self.db(presence.open_connection, self.clock, instance_id, user_id, role, protocol,  # type: ignore[no-any-return]
                                 self.connection_ttl)
        except Exception:
            log.exception("could not record the connection to instance %s", instance_id)
            return None

    async def close_connection(self, connection_id: int | None) -> None:
        if connection_id is None:
            return
        try:
            await self.db(presence.close_connection, self.clock, connection_id)
        except Exception:  # the row expires by itself
            log.exception("could not record the end of connection %s", connection_id)

    async def note_activity(self, instance_id: int, interaction: bool = False, force: bool = False) -> None:
        """Record Jupyter use, at most once per ``activity_seconds`` per instance (per process)."""
        mono = time.monotonic()
        if not force and mono - self._last_write.get(instance_id, -1e9) < self.config.activity_seconds:
            return
        self._last_write[instance_id] = mono
        now = self.now()
        try:
            await self.db(service.record_activity, instance_id, now, now if interaction else None)
        except Exception:  # activity is best effort; the session goes on
            log.exception("could not record activity of instance %s", instance_id)


def session_binding(session_data: Mapping[str, Any] | None) -> str:
    """What ties a connect token to the browser session that asked for it: the stored id of
    the server-side login session its cookie names (the one record of that session, so a token
    dies with it). Empty for a caller without a browser session (an API token)."""
    sid = session_data.get("sid") if session_data else None
    return login_session_hash(sid) or ""


def same_origin(headers: Headers, base_url: str) -> bool:
    """Whether a browser request comes from one of our pages (no Origin: not a browser's
    cross-site request). Guards cookie-authenticated websockets and Jupyter writes."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    netloc = urlsplit(origin).netloc.lower()
    return netloc == headers.get("host", "").lower() or origin.rstrip("/").lower() == _origin(base_url)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def error_body(exc: VisaError) -> tuple[dict[str, object], int]:
    return exc.to_dict(), http_status(exc)


async def refuse(websocket: WebSocket, status: int, body: dict[str, object]) -> None:
    """Refuse a websocket before accepting it: an HTTP answer with a JSON reason where the
    server can send one, a plain 403 otherwise."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(body, status_code=status))
    else:
        await websocket.close(code=1008)
