"""Logging in and out, shared by the login page and the JSON API.

Failed attempts are audited in their own transaction (the request's is rolled back on an
error answer) and rate-limited per IP+username and per IP (see ``ratelimit``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from visa.actor import Actor, actor_for
from visa.audit.service import record
from visa.auth.logsafe import clip
from visa.auth.ratelimit import SlidingWindow
from visa.errors import Unauthorized
from visa.policy import ActorKind
from visa.users.models import User
from visa.users.service import check_password

log = logging.getLogger(__name__)


@dataclass
class Limits:
    """The rate limits of one application (process)."""

    login: SlidingWindow  # failures per IP+username
    login_ip: SlidingWindow  # failures per IP, whatever the username (password spraying)
    tokens: SlidingWindow  # API token creations per user
    search: SlidingWindow  # user searches per user

    @classmethod
    def default(cls, now: Any) -> Limits:
        return cls(
            login=SlidingWindow(5, 300, now), login_ip=SlidingWindow(30, 300, now),
            tokens=SlidingWindow(10, 3600, now), search=SlidingWindow(60, 60, now),
        )


def anonymous(name: str, ip: str | None) -> Actor:
    """Who an unauthenticated attempt claims to be: for the audit log only, never for rules."""
    return Actor(user=None, name=clip(name, 48), ip=clip(ip, 64) if ip else None, kind=ActorKind.ANONYMOUS)


def audit_failure(services: Any, action: str, username: str, ip: str | None, reason: str, **details: Any) -> None:
    """Record a refused login in its own transaction, and log it (bounded)."""
    log.info("%s refused for %s from %s: %s", action, clip(username), clip(ip), reason)
    with services.database.unit_of_work() as s:
        record(anonymous(username, ip), s, services.clock, action, target_type="user",
               username=clip(username, 64), reason=reason, **details)


def local_login(session: Session, services: Any, limits: Limits, username: str, password: str,
                ip: str | None) -> User:
    """The user whose local password this is; Unauthorized (audited) otherwise."""
    key = (ip, username.lower()[:64])
    limits.login_ip.check(ip, "failed logins from your address")
    limits.login.check(key, "failed logins")
    user = session.scalar(select(User).where(User.username == username))
    if not check_password(user, password) or user is None:
        limits.login.hit(key)
        limits.login_ip.hit(ip)
        audit_failure(services, "login.failure", username, ip, "wrong username or password", method="local")
        raise Unauthorized("wrong username or password")
    limits.login.reset(key)
    record_login(session, services, user, ip, "local")
    return user


def record_login(session: Session, services: Any, user: User, ip: str | None, method: str) -> None:
    now = services.clock.now()
    user.last_login_at = now
    record(actor_for(user, now, ip=ip), session, services.clock, "login", target_type="user",
           target_id=user.id, method=method)
    log.info("login of %s from %s (%s)", clip(user.username), clip(ip), method)


def record_logout(actor: Actor | None, session: Session, services: Any, method: str) -> None:
    if actor is not None and actor.user is not None:
        record(actor, session, services.clock, "logout", target_type="user", target_id=actor.user.id, method=method)
