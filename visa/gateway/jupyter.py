"""The owner's JupyterLab, served from an origin that is not visa's (HTTP and websockets).

An instance's web content is written by whoever has a shell in it, so it never runs on
visa's origin, where it could read visa's pages and CSRF token. Each instance has a host
of its own under the user-content domain, ``<uid>.<settings.content_domain>``:

1. ``/jupyter/<uid>/...`` on visa's host (``visa.gateway.api``) checks the visa session,
   issues a one-time token and redirects to ``<uid>.<domain>/_visa/login?token=...``.
2. That host spends the token and sets a cookie of its own: host-only, HttpOnly, SameSite=Lax,
   Secure over https, signed, naming the user, the instance and the visa login session (the
   lab, and its open websockets, end when that session ends).
3. Requests under ``/jupyter/<uid>/`` on that host are proxied to JupyterLab (which runs with
   that base URL) with ``Authorization: token <secret>`` added; the secret is removed from
   the pages JupyterLab renders (its page config carries the token).

The proxy forwards no cookie at all (the token authenticates; a cookie may have been set by
a script in the lab, or by another instance's for a parent domain), drops any Set-Cookie
that is not host-only for the instance's host, streams every body, bounds websocket messages,
refuses cross-origin writes and websockets (JupyterLab skips its XSRF check for
token-authenticated requests) and closes a websocket whose user lost access. Nothing else is
served on a user-content host.

No instance takes more than its share: each has a pool of its own of upstream connections
(``gateway.jupyter_connections_per_instance``; a request waits ``jupyter_wait_seconds`` for
one, then 503), each lab (cookie) has at most ``jupyter_requests_per_lab`` requests in
progress (then 429), an answer silent for ``jupyter_idle_seconds`` is cut off, a page is
decoded up to ``jupyter_page_bytes`` only (a gzip bomb is cut there), and websockets count
against the gateway's per-user and per-instance limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.background import BackgroundTask, BackgroundTasks
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Host, Route, Router, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from visa.errors import NotFound, Unauthorized, VisaError
from visa.gateway import relay, service
from visa.gateway.common import Counts, Gateway, error_body, log, refuse
from visa.instances.models import ConnectionProtocol, MemberRole
from visa.metrics import RelayMeter
from visa.sharing import presence

LAB_COOKIE = "visa_lab"
SECURE_LAB_COOKIE = "__Host-visa_lab"  # over https: host-only, Secure, Path=/ by the browser's rule
LOGIN_PATH = "/_visa/login"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Per-hop headers (RFC 9110 7.6.1) and those the proxy sets itself.
HOP_HEADERS = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host", "authorization", "cookie", "origin", "referer",
        "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)  # fmt: skip
RESPONSE_DROP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authenticate"}
)
# The lab may frame itself (JupyterLab does); nothing else may frame it.
CONTENT_CSP = "frame-ancestors 'self'"
CLOSE_REVOKED = 4403
CACHE_LIMIT = 4096
_UID = re.compile(r"^[a-z0-9]{1,64}$")


@dataclass(frozen=True)
class LabSession:
    """Who a user-content cookie speaks for, and the Jupyter they may reach."""

    user_id: int
    epoch: str
    login: str  # the visa login session it came from: the lab ends with it
    target: service.Target


class PageTooLarge(Exception):
    """A page from the instance decodes to more than the gateway reads of one."""


async def decoded(raw: AsyncIterator[bytes], encoding: str, limit: int) -> AsyncIterator[bytes]:
    """A page's body without its content encoding, inflated ``limit`` bytes at most: a page
    that would inflate further (a gzip bomb) raises ``PageTooLarge`` there, and no more than
    64 KB is inflated from the instance's bytes at a time."""
    inflate = None
    if encoding in ("gzip", "x-gzip"):
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflate = zlib.decompressobj()
    total = 0
    async for chunk in raw:
        data = chunk
        while data:
            if inflate is None:
                piece, data = data, b""
            else:
                if inflate.eof:
                    break
                piece = inflate.decompress(data, 65536)
                data = inflate.unconsumed_tail
            total += len(piece)
            if total > limit:
                raise PageTooLarge(f"a page of more than {limit} bytes")
            if piece:
                yield piece


def instance_cookie(set_cookie: str, reserved: frozenset[str]) -> bool:
    """Whether an upstream Set-Cookie may reach the browser: host-only (no Domain attribute,
    which could reach visa or other instances) and not one of the names the gateway uses."""
    name = set_cookie.split("=", 1)[0].strip()
    attributes = [a.strip().lower() for a in set_cookie.split(";")[1:]]
    return name not in reserved and not any(a.split("=", 1)[0].strip() == "domain" for a in attributes)


def lab_cookies(cookie_header: str, cookie: str = LAB_COOKIE) -> list[str]:
    """Every value the browser sent for the lab cookie: a parent-domain cookie of the same
    name (set by another instance's script) must not hide the genuine one."""
    values = []
    for part in cookie_header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == cookie and value:
            values.append(value)
    return values


async def scrub(chunks: AsyncIterator[bytes], secret: bytes) -> AsyncIterator[bytes]:
    """The stream without ``secret``, holding back only as many bytes as could start it."""
    keep = max(len(secret) - 1, 0)
    pending = b""
    async for chunk in chunks:
        pending += chunk
        while secret and secret in pending:
            pending = pending.replace(secret, b"")
        if len(pending) > keep:
            cut = len(pending) - keep
            yield pending[:cut]
            pending = pending[cut:]
    if pending:
        yield pending


class JupyterProxy:
    # Where a cookie's user reaches the instance, and how a one-time link is spent.
    lookup: Callable[..., service.Target] = staticmethod(service.jupyter_target)
    consume: Callable[..., service.LabLogin] = staticmethod(service.consume_jupyter_token)

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        app = gateway.flask_app
        self.settings = gateway.services.settings
        self.max_age = int(app.permanent_session_lifetime.total_seconds())
        self.https = self.settings.base_url.startswith("https://")
        self._signer = URLSafeTimedSerializer(str(app.secret_key), salt="visa-user-content")
        self.lab_cookie = SECURE_LAB_COOKIE if self.https else LAB_COOKIE
        self._reserved = frozenset({LAB_COOKIE, SECURE_LAB_COOKIE, gateway.session_cookie})
        self._client: httpx.AsyncClient | None = None
        self._cache: dict[tuple[str, str], tuple[float, LabSession]] = {}
        # One database check at a time per lab and instance: the others wait for its answer.
        self._checking: dict[tuple[str, str], asyncio.Future[LabSession]] = {}
        self._per_lab = Counts()  # requests in progress per lab cookie

    def routes(self) -> list[BaseRoute]:
        """The user-content hosts: their own router, which serves nothing of visa's."""
        domain = self.settings.content_domain.split(":", 1)[0]
        content = Router(
            routes=[
                Route(LOGIN_PATH, self.login, methods=["GET"]),
                Route("/jupyter/{uid}", self.root, methods=HTTP_METHODS),
                Route("/jupyter/{uid}/{path:path}", self.http, methods=HTTP_METHODS),
                WebSocketRoute("/jupyter/{uid}/{path:path}", self.websocket),
            ],
            default=self.not_found,
        )
        return [Host("{host_uid}." + domain, app=content)]

    async def not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await WebSocket(scope, receive, send).close(code=1008)
            return
        response = JSONResponse({"error": "not_found", "message": "nothing here"}, status_code=404)
        await response(scope, receive, send)

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = self.settings.gateway
            self._client = httpx.AsyncClient(
                transport=relay.UpstreamTransport(  # a pool per instance: TCP or the session's unix socket
                    limits.jupyter_connections_per_instance, limits.upstream_pools, limits.jupyter_idle_seconds
                ),
                follow_redirects=False,
                trust_env=False,
            )
        return self._client

    def _timeout(self) -> httpx.Timeout:
        """Connects are quick; an answer may take long (a kernel, a download) but not be silent
        for longer than the idle bound; a request waits a bounded time for its instance's pool."""
        limits = self.settings.gateway
        idle = limits.jupyter_idle_seconds
        return httpx.Timeout(connect=self.gateway.config.connect_timeout, read=idle, write=idle,
                             pool=limits.jupyter_wait_seconds)

    # ------------------------------------------------------------------ the upstream connection

    @staticmethod
    def upstream_origin(target: service.Target) -> str:
        """JupyterLab's own origin, as it sees its requests (Origin, Referer, Location)."""
        return relay.http_origin(target)

    @staticmethod
    def upstream_url(target: service.Target, path_and_query: str, ws: bool = False) -> str:
        return (relay.ws_origin(target) if ws else relay.http_origin(target)) + path_and_query

    # ------------------------------------------------------------------ authentication

    def _host_uid(self, scope_params: dict[str, Any]) -> str:
        uid = str(scope_params.get("host_uid", ""))
        if not _UID.match(uid) or scope_params.get("uid", uid) != uid:
            raise NotFound("no such instance")
        return uid

    def signed_cookie(self, cookie_header: str, uid: str) -> tuple[str, dict[str, Any]]:
        """The first lab cookie of this browser signed for ``uid`` and what it says (not yet
        checked against the database), or Unauthorized."""
        for value in lab_cookies(cookie_header, self.lab_cookie):
            try:
                data = self._signer.loads(value, max_age=self.max_age)
            except BadSignature:
                continue
            if isinstance(data, dict) and data.get("uid") == uid and isinstance(data.get("user_id"), int):
                return value, data
        raise Unauthorized("open JupyterLab from visa")

    async def lab_session(self, cookie_header: str, uid: str) -> LabSession:
        """The Jupyter of ``uid`` for this browser's lab cookie, or Unauthorized / NotFound."""
        return await self.checked(*self.signed_cookie(cookie_header, uid), uid)

    async def checked(self, value: str, data: dict[str, Any], uid: str) -> LabSession:
        """The signed cookie ``value`` checked against the database (the answer kept a few
        seconds; requests that arrive together wait for one check)."""
        key = (value, uid)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        running = self._checking.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[LabSession] = asyncio.get_running_loop().create_future()
        self._checking[key] = future
        try:
            login = data.get("login")
            target = await self.gateway.db(
                self.lookup, self.gateway.clock, data["user_id"], data.get("epoch"), login, uid
            )
            lab = LabSession(data["user_id"], str(data.get("epoch")), str(login), target)
            if len(self._cache) > CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = (time.monotonic() + self.gateway.config.auth_cache_seconds, lab)
            future.set_result(lab)
            return lab
        except BaseException as exc:
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()  # the waiters get it; nobody else needs to
            else:
                future.cancel()
            raise
        finally:
            del self._checking[key]

    def same_origin(self, headers: Any, uid: str) -> bool:
        """A browser request from a page of this very host (not another instance's, not visa's)."""
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return False
        origin = headers.get("origin")
        if origin is None:
            return True
        # The Host a proxy in front passes may lack the public port: the configured origin counts.
        return urlsplit(origin).netloc.lower() == headers.get("host", "").lower() or (
            origin.rstrip("/").lower() == self.settings.user_content_origin(uid)
        )

    def _refusal(self, request: Request, exc: VisaError) -> Response:
        body, status = error_body(exc)
        if status == 401 and request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            # Back to visa, which checks its own session and sends a fresh one-time link.
            again = self.settings.base_url.rstrip("/") + self.visa_path(request.path_params, request.url.path)
            if request.url.query:
                again += "?" + request.url.query
            return RedirectResponse(again, status_code=303)
        return JSONResponse(body, status_code=status)

    def visa_path(self, params: dict[str, Any], path: str) -> str:
        """The path on visa's host that opens ``path`` of this host again."""
        return path

    def landing(self, uid: str, wanted: str) -> str:
        """Where a spent link leads: ``wanted`` if it is a page of this lab, else the lab."""
        lab = f"/jupyter/{uid}/"
        if not wanted.startswith(lab) or any(c in wanted for c in "\\\r\n"):
            return lab + "lab"
        return wanted

    async def login(self, request: Request) -> Response:
        """Spend a one-time token from visa; answer with this host's own cookie."""
        try:
            uid = self._host_uid(request.path_params)
        except VisaError as exc:
            body, status = error_body(exc)
            return JSONResponse(body, status_code=status)
        token = request.query_params.get("token", "")
        wanted = self.landing(uid, request.query_params.get("next", ""))
        try:
            spent: service.LabLogin = await self.gateway.db(self.consume, self.gateway.clock, uid, token)
        except VisaError as exc:
            body, status = error_body(exc)
            return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
        response = RedirectResponse(wanted, status_code=303)
        response.set_cookie(
            self.lab_cookie,
            self._signer.dumps(
                {"user_id": spent.user_id, "uid": uid, "epoch": spent.epoch, "login": spent.login}
            ),
            max_age=self.max_age,
            path="/",
            secure=self.https,
            httponly=True,
            samesite="lax",
        )
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    def _upstream_headers(self, headers: Any, target: service.Target, origin: str, ws: bool = False) -> list:
        out = [(k, v) for k, v in headers.items() if k.lower() not in HOP_HEADERS]
        if ws:  # the websocket client library makes its own handshake headers
            out = [(k, v) for k, v in out if not k.lower().startswith("sec-websocket")]
        # No cookie: the token authenticates, and whatever a cookie holds was set by a script.
        if not ws:  # a page's encoding is removed on the way: only what the gateway can decode
            out = [(k, v) for k, v in out if k.lower() != "accept-encoding"]
            if "gzip" in headers.get("accept-encoding", ""):
                out.append(("accept-encoding", "gzip"))
        out.append(("authorization", f"token {target.secret}"))
        # Already checked to be ours: say so in JupyterLab's terms (its host, not ours).
        if "origin" in headers:
            out.append(("origin", origin))
        if referer := headers.get("referer"):
            path = referer.split("://", 1)[-1]
            out.append(("referer", origin + (path[path.find("/") :] if "/" in path else "/")))
        return out

    # ------------------------------------------------------------------ HTTP

    async def root(self, request: Request) -> Response:
        return RedirectResponse(f"/jupyter/{request.path_params['uid']}/", status_code=307)

    async def http(self, request: Request) -> Response:
        try:
            uid = self._host_uid(request.path_params)
            value, data = self.signed_cookie(request.headers.get("cookie", ""), uid)
        except VisaError as exc:
            return self._refusal(request, exc)
        most = self.settings.gateway.jupyter_requests_per_lab
        if not self._per_lab.take(value, most):
            return JSONResponse(
                {"error": "rate_limited", "message": f"too many requests of this lab at once (at most {most})"},
                status_code=429, headers={"Retry-After": "1"},
            )
        try:
            response = await self._http(request, value, data, uid)
        except BaseException:
            self._per_lab.give_back(value)
            raise
        # The lab's request ends when its answer has been sent (or the browser went away).
        tasks = BackgroundTasks()
        if response.background is not None:
            tasks.add_task(response.background)
        tasks.add_task(self._per_lab.give_back, value)
        response.background = tasks
        return response

    async def _http(self, request: Request, value: str, data: dict[str, Any], uid: str) -> Response:
        try:
            lab = await self.checked(value, data, uid)
        except VisaError as exc:
            return self._refusal(request, exc)
        if request.method not in SAFE_METHODS and not self.same_origin(request.headers, uid):
            return JSONResponse({"error": "forbidden", "message": "cross-site request"}, status_code=403)
        target = lab.target
        self.gateway.spawn(self.gateway.note_activity(target.instance_id))

        origin = self.upstream_origin(target)
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        path = raw_path.decode("latin-1") + (f"?{request.url.query}" if request.url.query else "")
        headers = self._upstream_headers(request.headers, target, origin)
        has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
        upstream_request = self.client.build_request(
            request.method,
            self.upstream_url(target, path),
            headers=headers,
            content=request.stream() if has_body else None,
            timeout=self._timeout(),
        )
        try:
            upstream = await self.client.send(upstream_request, stream=True)
        except httpx.PoolTimeout:
            log.warning("jupyter of instance %s busy: no connection free", target.instance_id)
            return JSONResponse({"error": "unavailable", "message": "Jupyter is busy: try again"},
                                status_code=503, headers={"Retry-After": "5"})
        except httpx.TimeoutException as exc:
            log.warning("jupyter of instance %s silent: %s", target.instance_id, type(exc).__name__)
            return JSONResponse({"error": "unavailable", "message": "Jupyter does not answer"}, status_code=504)
        except httpx.HTTPError as exc:
            log.warning("jupyter of instance %s unreachable: %s", target.instance_id, type(exc).__name__)
            return JSONResponse(
                {"error": "unavailable", "message": "Jupyter does not answer"}, status_code=502
            )

        html = upstream.headers.get("content-type", "").startswith("text/html")
        encoding = upstream.headers.get("content-encoding", "").strip().lower()
        if html and encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            await upstream.aclose()
            return JSONResponse({"error": "unavailable", "message": "Jupyter sent a page the gateway cannot read"},
                                status_code=502)
        out_headers: list[tuple[str, str]] = []
        for key, value in upstream.headers.multi_items():
            name = key.lower()
            if name in RESPONSE_DROP or (name == "set-cookie" and not instance_cookie(value, self._reserved)):
                continue
            if html and name in ("content-length", "content-encoding"):
                continue  # the body is decoded and changed on the way
            if name == "location" and value.startswith(origin):
                value = value[len(origin) :] or "/"
            out_headers.append((name, value))
        out_headers.append(("content-security-policy", CONTENT_CSP))
        # Pages carry JupyterLab's page config, with the token in it: removed, streaming.
        if html:
            page = decoded(upstream.aiter_raw(), encoding, self.settings.gateway.jupyter_page_bytes)
            body = scrub(page, target.secret.encode())
        else:
            body = upstream.aiter_raw()
        response = StreamingResponse(
            _cut_short(body, target.instance_id), status_code=upstream.status_code,
            background=BackgroundTask(upstream.aclose),
        )
        response.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out_headers]
        return response

    # ------------------------------------------------------------------ websockets

    async def websocket(self, websocket: WebSocket) -> None:
        try:
            uid = self._host_uid(websocket.path_params)
        except VisaError as exc:
            body, status = error_body(exc)
            await refuse(websocket, status, body)
            return
        if not self.same_origin(websocket.headers, uid):
            await refuse(websocket, 403, {"error": "forbidden", "message": "cross-site websocket"})
            return
        try:
            lab = await self.lab_session(websocket.headers.get("cookie", ""), uid)
        except VisaError as exc:
            body, status = error_body(exc)
            await refuse(websocket, status, body)
            return
        target = lab.target
        refusal = self.gateway.admit(lab.user_id, target.instance_id)
        if refusal is not None:
            await refuse(websocket, *refusal)
            return
        try:
            await self._websocket(websocket, lab, uid)
        finally:
            self.gateway.leave(lab.user_id, target.instance_id)

    async def _websocket(self, websocket: WebSocket, lab: LabSession, uid: str) -> None:
        target = lab.target
        self.gateway.spawn(self.gateway.note_activity(target.instance_id))

        origin = self.upstream_origin(target)
        raw_path = websocket.scope.get("raw_path") or websocket.url.path.encode()
        path = raw_path.decode("latin-1") + (f"?{websocket.url.query}" if websocket.url.query else "")
        headers = self._upstream_headers(websocket.headers, target, origin, ws=True)
        wanted = websocket.scope.get("subprotocols") or []
        try:
            upstream = await relay.ws_connect(
                target,
                self.upstream_url(target, path, ws=True),
                additional_headers=headers,
                subprotocols=wanted or None,
                compression=None,
                max_size=self.gateway.config.ws_max_bytes,
                ping_interval=None,
                open_timeout=self.gateway.config.connect_timeout,
                user_agent_header=None,
                proxy=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            await refuse(websocket, status, {"error": "upstream", "message": f"Jupyter answered {status}"})
            return
        except (OSError, TimeoutError, WebSocketException) as exc:
            log.warning(
                "jupyter websocket of instance %s unreachable: %s", target.instance_id, type(exc).__name__
            )
            await refuse(websocket, 502, {"error": "unavailable", "message": "Jupyter does not answer"})
            return
        connection_id = None
        try:
            await websocket.accept(subprotocol=upstream.subprotocol)
            # An open kernel or terminal socket is the owner being in JupyterLab (presence).
            connection_id = await self.gateway.open_connection(
                target.instance_id, lab.user_id, MemberRole.OWNER, ConnectionProtocol.JUPYTER
            )
            with RelayMeter("jupyter") as meter:
                await self._relay(websocket, upstream, lab, uid, meter, connection_id)
        finally:
            await self.gateway.close_connection(connection_id)
            await upstream.close()

    async def _still_allowed(self, lab: LabSession, uid: str) -> bool:
        try:
            await self.gateway.db(
                self.lookup, self.gateway.clock, lab.user_id, lab.epoch, lab.login, uid
            )
        except VisaError:
            return False
        except Exception:  # the database may be briefly away; the kernel goes on
            log.exception("access check failed for the jupyter of instance %s", lab.target.instance_id)
        return True

    async def _relay(
        self, websocket: WebSocket, upstream: Any, lab: LabSession, uid: str, meter: RelayMeter,
        connection_id: int | None = None,
    ) -> None:
        code, reason = 1000, ""
        instance_id = lab.target.instance_id
        limit = self.gateway.config.ws_max_bytes

        async def to_upstream() -> None:
            nonlocal code, reason
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes")
                if data is None:
                    data = message.get("text", "")
                size = len(data) if isinstance(data, bytes) else len(data.encode())
                if size > limit:
                    code, reason = 1009, "message too big"
                    return
                meter.to_server += size
                await upstream.send(data)
                self.gateway.spawn(self.gateway.note_activity(instance_id))

        async def to_browser() -> None:
            nonlocal code, reason
            try:
                async for data in upstream:
                    if isinstance(data, bytes):
                        await websocket.send_bytes(data)
                        meter.to_client += len(data)
                    else:
                        await websocket.send_text(data)
                        meter.to_client += len(data.encode())
            except ConnectionClosed as exc:
                if exc.sent is not None and exc.sent.code == 1009:  # the instance sent too much at once
                    code, reason = 1009, "message too big"
                    return
            if upstream.close_code is not None and upstream.close_code not in (1005, 1006):
                code, reason = upstream.close_code, upstream.close_reason or ""

        async def watch() -> None:
            """A member removed, a password changed or an instance stopped ends the socket."""
            nonlocal code, reason
            while True:
                await asyncio.sleep(self.gateway.config.activity_seconds)
                if not await self._still_allowed(lab, uid):
                    code, reason = CLOSE_REVOKED, "access withdrawn"
                    log.info("closing jupyter websocket of instance %s: access withdrawn", instance_id)
                    return
                if connection_id is not None:
                    with contextlib.suppress(Exception):  # the row expires by itself
                        await self.gateway.db(presence.heartbeat, self.gateway.clock, connection_id,
                                              self.gateway.connection_ttl)

        tasks = [
            asyncio.create_task(to_upstream()),
            asyncio.create_task(to_browser()),
            asyncio.create_task(watch()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception) and not isinstance(
                    result, WebSocketDisconnect | ConnectionClosed | asyncio.CancelledError
                ):
                    log.debug("jupyter websocket relay ended: %r", result)
            with contextlib.suppress(Exception):
                await websocket.close(code, reason)


async def _cut_short(body: AsyncIterator[bytes], instance_id: int) -> AsyncIterator[bytes]:
    """The body as it comes; an answer that falls silent or grows past its bound ends the
    connection unfinished (the browser sees it cut, not complete)."""
    try:
        async for chunk in body:
            yield chunk
    except (httpx.TimeoutException, PageTooLarge) as exc:
        log.warning("jupyter answer of instance %s cut off: %s", instance_id, exc or type(exc).__name__)
        raise
