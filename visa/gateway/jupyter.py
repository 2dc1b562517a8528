"""``/jupyter/<uid>/...``: the owner's JupyterLab, proxied (HTTP and websockets).

The visa session cookie authenticates the browser; the gateway adds ``Authorization: token
<secret>`` towards JupyterLab, which runs with the same ``/jupyter/<uid>/`` base URL, and
removes the secret from the pages JupyterLab renders (its page config carries the token).
Cookies other than visa's pass through, so JupyterLab's own ``_xsrf`` cookie works.

Because JupyterLab skips its XSRF check for token-authenticated requests, the proxy itself
refuses cross-site writes and websockets (Origin / Sec-Fetch-Site).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from urllib.parse import quote

import httpx
from itsdangerous import BadSignature
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from visa.errors import Unauthorized, VisaError
from visa.gateway import relay, service
from visa.gateway.common import Gateway, error_body, log, refuse, same_origin
from visa.metrics import RelayMeter

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
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
MAX_HTML = 32 * 1024 * 1024
CACHE_LIMIT = 4096


class JupyterProxy:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        app = gateway.flask_app
        self.cookie_name: str = app.config["SESSION_COOKIE_NAME"]
        self.max_age = int(app.permanent_session_lifetime.total_seconds())
        self._serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
        self._client: httpx.AsyncClient | None = None
        self._cache: dict[tuple[str, str], tuple[float, service.Target]] = {}

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # No read timeout: kernels and downloads may take long; connects must not.
            limits = httpx.Limits(max_connections=256, max_keepalive_connections=32)
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(None, connect=self.gateway.config.connect_timeout),
                transport=relay.UpstreamTransport(limits),  # TCP or the session's unix socket
                follow_redirects=False,
                trust_env=False,
            )
        return self._client

    # ------------------------------------------------------------------ authentication

    async def target(self, cookies: dict[str, str], uid: str) -> service.Target:
        """Jupyter of ``uid`` for this browser's visa session, or Unauthorized / NotFound."""
        cookie = cookies.get(self.cookie_name)
        if not cookie or self._serializer is None:
            raise Unauthorized("log in first")
        key = (cookie, uid)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            data = self._serializer.loads(cookie, max_age=self.max_age)
        except BadSignature as exc:
            raise Unauthorized("log in first") from exc
        user_id = data.get("user_id") if isinstance(data, dict) else None
        if not isinstance(user_id, int):
            raise Unauthorized("log in first")
        target = await self.gateway.db(
            service.jupyter_target, self.gateway.clock, user_id, data.get("epoch"), uid
        )
        if len(self._cache) > CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = (time.monotonic() + self.gateway.config.auth_cache_seconds, target)
        return target  # type: ignore[no-any-return]

    def _upstream_headers(self, headers: Any, target: service.Target, origin: str, ws: bool = False) -> list:
        out = [(k, v) for k, v in headers.items() if k.lower() not in HOP_HEADERS]
        if ws:  # the websocket client library makes its own handshake headers
            out = [(k, v) for k, v in out if not k.lower().startswith("sec-websocket")]
        cookies = [
            c
            for c in headers.get("cookie", "").split(";")
            if c.strip() and c.split("=", 1)[0].strip() != self.cookie_name
        ]
        if cookies:
            out.append(("cookie", ";".join(cookies).strip()))
        out.append(("authorization", f"token {target.secret}"))
        # Already checked to be ours: say so in JupyterLab's terms (its host, not ours).
        if "origin" in headers:
            out.append(("origin", origin))
        if referer := headers.get("referer"):
            path = referer.split("://", 1)[-1]
            out.append(("referer", origin + (path[path.find("/") :] if "/" in path else "/")))
        return out

    def _refusal(self, request: Request, exc: VisaError) -> Response:
        body, status = error_body(exc)
        if status == 401 and request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
        return JSONResponse(body, status_code=status)

    # ------------------------------------------------------------------ HTTP

    async def root(self, request: Request) -> Response:
        return RedirectResponse(f"/jupyter/{request.path_params['uid']}/", status_code=307)

    async def http(self, request: Request) -> Response:
        uid = request.path_params["uid"]
        try:
            target = await self.target(request.cookies, uid)
        except VisaError as exc:
            return self._refusal(request, exc)
        if request.method not in SAFE_METHODS and not same_origin(
            request.headers, self.gateway.services.settings.base_url
        ):
            return JSONResponse({"error": "forbidden", "message": "cross-site request"}, status_code=403)
        self.gateway.spawn(self.gateway.note_activity(target.instance_id))

        origin = relay.http_origin(target)
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        url = origin + raw_path.decode("latin-1")
        if request.url.query:
            url += "?" + request.url.query
        headers = self._upstream_headers(request.headers, target, origin)
        has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
        upstream_request = self.client.build_request(
            request.method, url, headers=headers, content=request.stream() if has_body else None
        )
        try:
            upstream = await self.client.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            log.warning("jupyter of instance %s unreachable: %s", target.instance_id, type(exc).__name__)
            return JSONResponse(
                {"error": "unavailable", "message": "Jupyter does not answer"}, status_code=502
            )

        out_headers = [(k, v) for k, v in upstream.headers.multi_items() if k.lower() not in RESPONSE_DROP]
        if (location := upstream.headers.get("location")) and location.startswith(origin):
            out_headers = [(k, v) for k, v in out_headers if k.lower() != "location"]
            out_headers.append(("location", location[len(origin) :] or "/"))
        content_type = upstream.headers.get("content-type", "")
        length = upstream.headers.get("content-length", "")
        if content_type.startswith("text/html") and not (length.isdigit() and int(length) > MAX_HTML):
            # Pages carry JupyterLab's page config, with the token in it: remove it.
            # (Larger HTML is a user's file download, passed through untouched.)
            try:
                body = await upstream.aread()
            finally:
                await upstream.aclose()
            body = body.replace(target.secret.encode(), b"")
            out_headers = [
                (k, v) for k, v in out_headers if k.lower() not in ("content-length", "content-encoding")
            ]
            response: Response = Response(body, status_code=upstream.status_code)
        else:
            response = StreamingResponse(
                upstream.aiter_raw(),
                status_code=upstream.status_code,
                background=BackgroundTask(upstream.aclose),
            )
        response.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in out_headers]
        if isinstance(response, Response) and not isinstance(response, StreamingResponse):
            response.raw_headers.append((b"content-length", str(len(response.body)).encode()))
        return response

    # ------------------------------------------------------------------ websockets

    async def websocket(self, websocket: WebSocket) -> None:
        uid = websocket.path_params["uid"]
        if not same_origin(websocket.headers, self.gateway.services.settings.base_url):
            await refuse(websocket, 403, {"error": "forbidden", "message": "cross-site websocket"})
            return
        try:
            target = await self.target(websocket.cookies, uid)
        except VisaError as exc:
            body, status = error_body(exc)
            await refuse(websocket, status, body)
            return
        self.gateway.spawn(self.gateway.note_activity(target.instance_id))

        origin = relay.http_origin(target)
        raw_path = websocket.scope.get("raw_path") or websocket.url.path.encode()
        url = relay.ws_origin(target) + raw_path.decode("latin-1")
        if websocket.url.query:
            url += "?" + websocket.url.query
        headers = self._upstream_headers(websocket.headers, target, origin, ws=True)
        wanted = websocket.scope.get("subprotocols") or []
        try:
            upstream = await relay.ws_connect(
                target,
                url,
                additional_headers=headers,
                subprotocols=wanted or None,
                compression=None,
                max_size=None,
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
        try:
            await websocket.accept(subprotocol=upstream.subprotocol)
            with RelayMeter("jupyter") as meter:
                await self._relay(websocket, upstream, target.instance_id, meter)
        finally:
            await upstream.close()

    async def _relay(self, websocket: WebSocket, upstream: Any, instance_id: int, meter: RelayMeter) -> None:
        code, reason = 1000, ""

        async def to_upstream() -> None:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes")
                if data is None:
                    data = message.get("text", "")
                    meter.to_server += len(data.encode())
                else:
                    meter.to_server += len(data)
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
            except ConnectionClosed:
                pass
            if upstream.close_code is not None and upstream.close_code not in (1005, 1006):
                code, reason = upstream.close_code, upstream.close_reason or ""

        tasks = [asyncio.create_task(to_upstream()), asyncio.create_task(to_browser())]
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
