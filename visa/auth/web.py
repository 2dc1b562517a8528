"""Request hooks of identity: OIDC session refresh and roles, API token scopes, helpers.

Installed with the ``auth_pages`` blueprint (``before_app_request``), after the CSRF check.
- A session opened through the identity provider keeps its refresh token on the server (the
  login session's row; never in the cookie). At least every ``oidc.refresh_seconds``, and
  before the access token expires, it is refreshed: the provider's roles are read again (a
  role removed there stops counting here), and if the provider refuses (the user logged out
  elsewhere, was disabled, or the session expired), the visa session ends.
- API tokens work on ``/api/`` only, and ``api:read`` tokens only for safe methods.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import current_app, g, request, session
from sqlalchemy import delete, update

from visa.auth.login import Limits
from visa.auth.logsafe import clip
from visa.errors import Forbidden, Unauthorized
from visa.policy import allowed
from visa.users.models import LoginSession, Role, User
from visa.web.context import current_actor, current_login, services

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


def refresh_at(expires_in: Any) -> Any:
    """When a session whose access token lives ``expires_in`` seconds is next refreshed."""
    svc = services()
    try:
        lifetime = max(int(expires_in) - REFRESH_MARGIN, 0)
    except (TypeError, ValueError):
        lifetime = 0
    return svc.clock.now() + timedelta(seconds=min(lifetime, svc.settings.oidc.refresh_seconds))


def claim_roles(client: Any, tokens: dict[str, Any], fallback: dict[str, Any] | None = None) -> frozenset[Role]:
    """The visa roles in a token response, by this app's provider settings."""
    from visa.auth.oidc import roles_in_tokens

    return roles_in_tokens(client, tokens, services().settings.oidc, fallback)


def _write_apart(fn: Any) -> None:
    # Its own transaction: a refresh token the provider rotated, or a session it ended, must be
    # stored even when this request then fails (and its own transaction is rolled back).
    with services().database.unit_of_work() as s:
        fn(s)


def _refresh_oidc_session() -> None:
    from visa.auth.oidc import client_for

    row = current_login()
    if row is None or row.method != "oidc":
        return
    svc = services()
    if row.refresh_at is not None and svc.clock.now() < row.refresh_at:
        return
    id_hash, user_id = row.id_hash, row.user_id
    if not svc.settings.oidc.enabled or not row.refresh_token:
        _end(id_hash, "no identity provider to refresh with")
        return
    client = client_for(svc.settings.oidc)
    try:
        tokens = client.refresh(row.refresh_token)
        roles = claim_roles(client, tokens)
    except Unauthorized:
        _end(id_hash, "the identity provider ended it")
        return
    except OSError as exc:
        # The provider is down: keep the session, try again on a later request. Its roles, though,
        # count only while confirmed: unconfirmed for a whole period more, they are dropped.
        log.warning("token refresh failed, will retry: %s", clip(str(exc), 200))
        period = timedelta(seconds=svc.settings.oidc.refresh_seconds)
        if row.idp_roles and row.refresh_at is not None and svc.clock.now() - row.refresh_at >= period:
            log.warning("roles from the identity provider of user %s dropped until it answers", clip(user_id))
            _write_apart(lambda s: s.execute(
                update(LoginSession).where(LoginSession.id_hash == id_hash).values(idp_roles="")))
            _forget_resolved()
        return
    names = " ".join(sorted(r.value for r in roles))
    values = {"refresh_token": tokens.get("refresh_token") or row.refresh_token,
              "refresh_at": refresh_at(tokens.get("expires_in", 300)), "idp_roles": names,
              "last_seen_at": svc.clock.now()}
    _write_apart(lambda s: (
        s.execute(update(LoginSession).where(LoginSession.id_hash == id_hash).values(**values)),
        s.execute(update(User).where(User.id == user_id).values(idp_roles=names)),
    ))
    _forget_resolved()


def _forget_resolved() -> None:
    # The actor is resolved again, from the row just written (with the roles just read).
    db = g.get("db_session")
    if db is not None:
        db.expire_all()
    g.pop("actor", None)
    g.pop("login_session", None)


def _end(id_hash: str, why: str) -> None:
    log.info("session of user %s ended: %s", clip(session.get("user_id")), why)
    _write_apart(lambda s: s.execute(delete(LoginSession).where(LoginSession.id_hash == id_hash)))
    session.clear()
    g.actor = None
    g.pop("login_session", None)


def _enforce_token_scopes() -> None:
    if not _bearer():
        return
    actor = current_actor(required=False)
    if actor is None or actor.scopes is None:
        return
    if not request.path.startswith("/api/"):
        raise Forbidden("API tokens may only be used on /api/")
    if request.method not in SAFE_METHODS and not allowed(actor, "api.write"):
        raise Forbidden("this token is read-only (scope api:read)")


def before_request() -> None:
    if request.endpoint == "static":
        return
    if "sid" in session and not _bearer():
        _refresh_oidc_session()
    _enforce_token_scopes()
