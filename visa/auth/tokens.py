"""Personal API tokens for scripts (hashed at rest), and bearer authentication."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, joinedload

from visa.actor import Actor, actor_for
from visa.audit.service import record
from visa.clock import Clock
from visa.errors import InvalidInput, NotFound, Unauthorized
from visa.policy import allowed, require
from visa.users.models import ApiToken, User

TOKEN_PREFIX = "visa_"
SCOPES = frozenset({"api", "api:read"})
LAST_USED_PRECISION = timedelta(minutes=1)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_token(
    actor: Actor, session: Session, clock: Clock, *, name: str, expires_at: datetime | None = None,
    scopes: str = "api",
) -> tuple[ApiToken, str]:
    """Return the stored token and its secret value, shown once."""
    if actor.user is None:
        raise Unauthorized("log in first")
    require(actor, "api_token.create")
    if not name or len(name) > 100:
        raise InvalidInput("token name must be 1-100 characters", field="name")
    wanted = frozenset(scopes.split())
    if not wanted or not wanted <= SCOPES:
        raise InvalidInput(f"unknown scope(s): {sorted(wanted - SCOPES)}; allowed: {sorted(SCOPES)}", field="scopes")
    if expires_at is not None and expires_at <= clock.now():
        raise InvalidInput("expiry must be in the future", field="expires_at")
    prefix = secrets.token_hex(4)
    value = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken(
        user_id=actor.user.id, name=name, token_hash=_hash(value), prefix=prefix,
        scopes=" ".join(sorted(wanted)), created_at=clock.now(), expires_at=expires_at,
    )
    session.add(token)
    session.flush()
    record(actor, session, clock, "token.create", target_type="token", target_id=token.id, name=name)
    return token, value


def list_api_tokens(actor: Actor, session: Session) -> list[ApiToken]:
    """The actor's own tokens, newest first."""
    return list(session.scalars(
        select(ApiToken).where(ApiToken.user_id == actor.id).order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
    ))


def own_api_token(actor: Actor, session: Session, token_id: int) -> ApiToken:
    """One of the actor's own tokens; another user's is "no such token", so that ids reveal nothing."""
    token = session.get(ApiToken, token_id)
    if token is None or token.user_id != actor.id:
        raise NotFound("no such token")
    return token


def revoke_api_token(actor: Actor, session: Session, clock: Clock, token_id: int) -> None:
    token = session.get(ApiToken, token_id)
    if token is None or (token.user_id != actor.id and not allowed(actor, "api_token.revoke_any")):
        raise NotFound("no such token")
    token.revoked_at = clock.now()
    record(actor, session, clock, "token.revoke", target_type="token", target_id=token.id)


# Built once (the statement costs about as much to make as to run).
_BY_HASH = (
    select(ApiToken, User).join(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_hash == bindparam("token_hash")).options(joinedload(User.grants))
)


def actor_from_api_token(session: Session, clock: Clock, value: str, ip: str | None = None) -> Actor:
    if not value.startswith(TOKEN_PREFIX) or len(value) > 200:
        raise Unauthorized("invalid token")
    # One query per request for the token, its user and the user's roles.
    row = session.execute(_BY_HASH, {"token_hash": _hash(value)}).unique().first()
    now = clock.now()
    if row is None or not hmac.compare_digest(row[0].token_hash, _hash(value)):
        raise Unauthorized("invalid token")
    token, user = row
    if token.revoked_at is not None or (token.expires_at is not None and token.expires_at <= now):
        raise Unauthorized("token expired or revoked")
    if not user.active:
        raise Unauthorized("invalid token")
    # "Last used" to the minute: a script polling the API does not write a row per request.
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_PRECISION:
        token.last_used_at = now
    actor = actor_for(user, now, ip=ip, scopes=frozenset(token.scopes.split()))
    return dataclasses.replace(actor, credential="api_token")


def actor_from_bearer(session: Session, services, value: str, ip: str | None = None) -> Actor:
    """A personal API token, or (when an identity provider is configured) an OIDC access token."""
    if value.startswith(TOKEN_PREFIX):
        return actor_from_api_token(session, services.clock, value, ip)
    if services.settings.oidc.enabled:
        from visa.auth.oidc import actor_from_access_token

        return actor_from_access_token(session, services, value, ip)
    raise Unauthorized("invalid token")
