"""Request hooks of identity: OIDC session refresh and roles, API token scopes, helpers.

Installed with the ``auth_pages`` blueprint (``before_app_request``), after the CSRF check.
- A session opened through the identity provider keeps its refresh token; once the access
  token it came with expires, it is refreshed. If the provider refuses (the user logged
  out elsewhere, was disabled, or the session expired), the visa session ends.
- Roles mapped from the provider's token claims are added to the session's actor.
- API tokens work on ``/api/`` only, and ``api:read`` tokens only for safe methods.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from urllib.parse import urlsplit

from flask import current_app, g, request, session

from visa.auth.login import Limits
from visa.auth.logsafe import clip
from visa.errors import Forbidden, Unauthorized
from visa.users.models import Role
from visa.web.context import current_actor, services

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REFRESH_MARGIN = 30  # seconds before the access token's expiry


def limits() -> Limits:
    ext = current_app.extensions
    if "visa_auth_limits" not in ext:
        clock = services().clock
        ext["visa_auth_limits"] = Limits.default(lambda: clock.now().timestamp())
    return ext["visa_auth_limits"]  # type: ignore[no-any-return]


def client_ip() -> str | None:
    # Behind nginx, uvicorn (proxy headers, --forwarded-allow-ips) has already put the client from
    # X-Forwarded-For into the ASGI scope, which is what remote_addr reads.
    return request.remote_addr


def safe_next(value: str | None, default: str = "/") -> str:
    """Only same-origin relative paths: never ``//host``, ``/\\host``, a scheme or a control character."""
    if not value or len(value) > 512 or not value.startswith("/") or value.startswith(("//", "/\\")):
        return default
    if any(ord(c) < 0x20 or c == "\\" for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


def _bearer() -> bool:
    return request.headers.get("Authorization", "")[:7].lower() == "bearer "


def _refresh_oidc_session() -> None:
    from visa.auth.oidc import client_for

    data = session.get("oidc")
    if not isinstance(data, dict) or time.time() < float(data.get("exp", 0)) - REFRESH_MARGIN:
        return
    settings = services().settings
    if not settings.oidc.server_url:
        session.clear()
        return
    client = client_for(settings.oidc)
    try:
        tokens = client.refresh(str(data.get("rt", "")))
    except Unauthorized:
        log.info("identity provider session of user %s ended: logging out", clip(session.get("user_id")))
        session.clear()
        return
    except OSError as exc:
        # The provider is down: keep the session, try again on a later request.
        log.warning("token refresh failed, will retry: %s", clip(str(exc), 200))
        return
    data = {**data, "rt": tokens.get("refresh_token") or data.get("rt"),
            "exp": time.time() + int(tokens.get("expires_in", 300))}
    session["oidc"] = data


def _apply_claim_roles() -> None:
    data = session.get("oidc")
    if _bearer() or not isinstance(data, dict) or not data.get("roles"):
        return
    actor = current_actor(required=False)
    if actor is None or actor.user is None:
        return
    extra = frozenset(Role(r) for r in data["roles"] if r in Role.__members__)
    g.actor = dataclasses.replace(actor, roles=actor.roles | extra)


def _enforce_token_scopes() -> None:
    if not _bearer():
        return
    actor = current_actor(required=False)
    if actor is None or actor.scopes is None:
        return
    if not request.path.startswith("/api/"):
        raise Forbidden("API tokens may only be used on /api/")
    if "api" not in actor.scopes and request.method not in SAFE_METHODS:
        raise Forbidden("this token is read-only (scope api:read)")


def before_request() -> None:
    if request.endpoint == "static":
        return
    if "oidc" in session:
        _refresh_oidc_session()
        _apply_claim_roles()
    _enforce_token_scopes()
