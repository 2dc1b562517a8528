"""Login sessions: their server-side rows (opened, looked up, ended, purged), and what makes one
valid: its row, and the user's epoch in the cookie.

The one check of a session cookie: pages, the API, the event stream and the gateway use it. Ending
every session of a user is the users' service's (``end_sessions``): a changed password or a
deactivation does it, and users sit below auth.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, joinedload

from visa.users.models import LoginSession, Role, User

# Also the cookie's lifetime. Both are wall-clock time (the cookie's signature carries its age),
# whatever clock the service runs on.
SESSION_LIFETIME = timedelta(hours=12)


def _wall() -> datetime:
    return datetime.now(UTC)


def _sid_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def open_login_session(
    session: Session, user: User, now: datetime, *, method: str, ip: str | None = None,
    refresh_token: str | None = None, refresh_at: datetime | None = None, idp_roles: Iterable[Role] = (),
) -> tuple[LoginSession, str]:
    """A new login session and its secret id (for the cookie; only its hash is stored)."""
    sid = secrets.token_urlsafe(32)
    roles = " ".join(sorted(r.value for r in idp_roles))
    row = LoginSession(
        id_hash=_sid_hash(sid), user_id=user.id, method=method, created_at=now, last_seen_at=now,
        expires_at=_wall() + SESSION_LIFETIME, ip=ip[:64] if ip else None, refresh_token=refresh_token,
        refresh_at=refresh_at, idp_roles=roles,
    )
    session.add(row)
    if method == "oidc":
        user.idp_roles = roles
    session.flush()
    return row, sid


def live_login_session(session: Session, sid: object, user_id: object) -> LoginSession | None:
    """The session a cookie names, if it has not ended (logout, revocation, expiry)."""
    if not isinstance(sid, str) or not sid or len(sid) > 128 or not isinstance(user_id, int):
        return None
    row = session.get(LoginSession, _sid_hash(sid))
    if row is None or row.user_id != user_id or row.expires_at <= _wall():
        return None
    return row


def live_login_session_and_user(session: Session, sid: object, user_id: object) -> tuple[LoginSession, User] | None:
    """``live_login_session``, with its user and the user's role grants read in the same query
    (a request's one query for who is asking)."""
    if not isinstance(sid, str) or not sid or len(sid) > 128 or not isinstance(user_id, int):
        return None
    found = session.execute(
        select(LoginSession, User).join(User, User.id == LoginSession.user_id)
        .where(LoginSession.id_hash == _sid_hash(sid)).options(joinedload(User.grants))
    ).unique().first()
    if found is None:
        return None
    row, user = found
    if row.user_id != user_id or row.expires_at <= _wall():
        return None
    return row, user


def login_session_hash(sid: object) -> str | None:
    """The stored id of the session a cookie names (what other records bind to), or None."""
    return _sid_hash(sid) if isinstance(sid, str) and sid and len(sid) <= 128 else None


def live_login_session_by_hash(
    session: Session, id_hash: object, user_id: int | None = None
) -> LoginSession | None:
    """The session of this stored id (of this user, if given), if it has not ended (logout,
    revocation, expiry)."""
    if not isinstance(id_hash, str) or len(id_hash) != 64:
        return None
    row = session.get(LoginSession, id_hash)
    if row is None or (user_id is not None and row.user_id != user_id) or row.expires_at <= _wall():
        return None
    return row


def end_login_session(session: Session, sid: object) -> None:
    if isinstance(sid, str) and sid and len(sid) <= 128:
        session.execute(delete(LoginSession).where(LoginSession.id_hash == _sid_hash(sid)))


def purge_expired_sessions(session: Session) -> int:
    result = session.execute(delete(LoginSession).where(LoginSession.expires_at <= _wall()))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def session_epoch(user: User) -> str:
    # Belt and braces next to the session row: a changed password or account ends its sessions.
    return (user.password_hash or "")[-12:] + str(user.active)


def session_user(s: Session, data: Mapping[str, Any], now: datetime) -> tuple[User, LoginSession] | None:
    """The user and login session of a decoded session cookie, while it has not ended."""
    found = live_login_session_and_user(s, data.get("sid"), data.get("user_id"))
    if found is None:
        return None
    row, user = found
    if not user.active or data.get("epoch") != session_epoch(user):
        return None
    return user, row
