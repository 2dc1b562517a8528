"""Web services an image declares besides JupyterLab (``web_services`` of its catalogue file),
each served from a user-content host of its own, ``<uid>-<name>.<settings.content_domain>``.

The same way in as JupyterLab's (``visa.gateway.jupyter``), with the same isolation:

1. ``/services/<uid>/<name>/...`` on visa's host (``visa.gateway.api``) checks the visa session,
   issues a one-time token for that service and redirects to the service's host.
2. That host spends the token and sets a cookie of its own (host-only, HttpOnly, SameSite=Lax,
   signed, naming the user, the host and the visa login session): it opens nothing else, and
   no other host's cookie opens it.
3. Every path of that host is proxied to the service's port at the same path.

The service gets no credential of visa's: no instance secret, no Authorization, and of the
browser's cookies only its own (visa's and the gateway's are removed). Its Set-Cookie reaches
the browser only host-only and not under a name the gateway uses; cross-origin writes and
websockets are refused; its bounds are JupyterLab's.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.routing import BaseRoute, Host, Route, Router, WebSocketRoute

from visa.errors import NotFound
from visa.gateway import service
from visa.gateway.jupyter import HTTP_METHODS, LOGIN_PATH, JupyterProxy

# <uid>-<name>: an instance uid is [a-z0-9], a service name [a-z0-9-] (catalogue schema).
_HOST = re.compile(r"^[a-z0-9]{1,64}-[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")


class WebServiceProxy(JupyterProxy):
    lookup = staticmethod(service.web_service_target)
    consume = staticmethod(service.consume_web_service_token)

    def routes(self) -> list[BaseRoute]:
        """The services' hosts (a "-" in the first label): before the instances' own hosts."""
        domain = self.settings.content_domain.split(":", 1)[0]
        content = Router(
            routes=[
                Route(LOGIN_PATH, self.login, methods=["GET"]),
                Route("/{path:path}", self.http, methods=HTTP_METHODS),
                WebSocketRoute("/{path:path}", self.websocket),
            ],
            default=self.not_found,
        )
        return [Host("{host_uid}-{service}." + domain, app=content)]

    def _host_uid(self, scope_params: dict[str, Any]) -> str:
        """The host's first label, ``<uid>-<name>``: what its cookie and its links name."""
        label = f"{scope_params.get('host_uid', '')}-{scope_params.get('service', '')}"
        if not _HOST.match(label):
            raise NotFound("no such web service")
        return label

    def visa_path(self, params: dict[str, Any], path: str) -> str:
        uid, _, name = self._host_uid(params).partition("-")
        return f"/services/{uid}/{name}{path}"

    def landing(self, uid: str, wanted: str) -> str:
        """A path of this host only (not ``//elsewhere``)."""
        if not wanted.startswith("/") or wanted.startswith("//") or any(c in wanted for c in "\\\r\n"):
            return "/"
        return wanted

    def _upstream_headers(self, headers: Any, target: service.Target, origin: str, ws: bool = False) -> list:
        # JupyterLab's headers without its token; the service's own cookies, none of visa's.
        out = [(k, v) for k, v in super()._upstream_headers(headers, target, origin, ws) if k != "authorization"]
        own = []
        for part in headers.get("cookie", "").split(";"):
            name = part.split("=", 1)[0].strip()
            if name and name not in self._reserved:
                own.append(part.strip())
        if own:
            out.append(("cookie", "; ".join(own)))
        return out
