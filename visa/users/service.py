"""Users: accounts, role grants with expiry, quotas."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from visa.actor import Actor
from visa.audit.service import record
from visa.auth.policy import require
from visa.clock import Clock
from visa.errors import Conflict, InvalidInput, NotFound
from visa.users.models import USERNAME_PATTERN, Role, RoleGrant, User

_USERNAME = re.compile(USERNAME_PATTERN)
MIN_PASSWORD = 8


def validate_username(username: str) -> str:
    if not isinstance(username, str) or not _USERNAME.match(username):
        shown = username[:40] + "…" if isinstance(username, str) and len(username) > 40 else username
        raise InvalidInput(
            f"invalid username {shown!r}: 1-32 characters, lowercase letters, digits, '_', '.', '-', "
            "starting with a letter or '_'",
            field="username",
        )
    return username


MAX_QUOTA = 10_000  # instances per user; the admin API's bound too


def validate_quota(quota: int) -> int:
    if not isinstance(quota, int) or isinstance(quota, bool) or not -1 <= quota <= MAX_QUOTA:
        raise InvalidInput(f"invalid quota {quota!r}: a whole number from 0 to {MAX_QUOTA}, or -1 for unlimited",
                           field="quota")
    return quota


def parse_role(value: str) -> Role:
    try:
        return Role(value.upper())
    except (ValueError, AttributeError):
        raise InvalidInput(
            f"unknown role {value!r}; one of {', '.join(r.value for r in Role)}", field="role"
        ) from None


def get_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user {username!r}", field="username")
    return user


def create_user(
    session: Session,
    actor: Actor,
    clock: Clock,
    *,
    username: str,
    full_name: str = "",
    email: str | None = None,
    password: str | None = None,
    quota: int | None = None,
    default_quota: int = 2,
    external_id: str | None = None,
    uid_number: int | None = None,
    gid_number: int | None = None,
    home_path: str | None = None,
) -> User:
    require(actor, "manage_users")
    validate_username(username)
    if len(full_name) > 200:
        raise InvalidInput("full name longer than 200 characters", field="full_name")
    if email is not None and (len(email) > 254 or "@" not in email):
        raise InvalidInput(f"invalid email {email[:60]!r}", field="email")
    if password is not None and len(password) < MIN_PASSWORD:
        raise InvalidInput(f"password shorter than {MIN_PASSWORD} characters", field="password")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} already exists", field="username")
    user = User(
        username=username,
        full_name=full_name,
        email=email,
        external_id=external_id,
        uid_number=uid_number,
        gid_number=gid_number,
        home_path=home_path,
        instance_quota=validate_quota(default_quota if quota is None else quota),
        password_hash=generate_password_hash(password) if password else None,
        active=True,
        created_at=clock.now(),
    )
    session.add(user)
    session.flush()
    record(session, actor, clock, "user.create", target_type="user", target_id=user.id, username=username)
    return user


def set_password(session: Session, actor: Actor, clock: Clock, user: User, password: str) -> None:
    require(actor, "manage_users")
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"password shorter than {MIN_PASSWORD} characters", field="password")
    user.password_hash = generate_password_hash(password)
    record(session, actor, clock, "user.password", target_type="user", target_id=user.id)


def check_password(user: User, password: str) -> bool:
    return bool(user.password_hash) and user.active and check_password_hash(user.password_hash, password)


def grant_role(
    session: Session,
    actor: Actor,
    clock: Clock,
    user: User,
    role: Role,
    *,
    expires_at: datetime | None = None,
) -> RoleGrant:
    """Grant (or renew) a role. Only admins may grant; GUEST must be time-limited."""
    require(actor, "manage_roles")
    now = clock.now()
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("a role grant must expire in the future", field="expires_at")
    if role == Role.GUEST and expires_at is None:
        raise InvalidInput("GUEST is a time-limited role: give an expiry", field="expires_at")
    grant = session.scalar(select(RoleGrant).where(RoleGrant.user_id == user.id, RoleGrant.role == role))
    if grant is None:
        grant = RoleGrant(user=user, role=role, granted_at=now, granted_by_id=actor.id)
        session.add(grant)
    grant.expires_at = expires_at
    grant.granted_at = now
    session.flush()
    record(
        session, actor, clock, "role.grant", target_type="user", target_id=user.id,
        role=role.value, expires_at=expires_at.isoformat() if expires_at else None,
    )
    return grant


def revoke_role(session: Session, actor: Actor, clock: Clock, user: User, role: Role) -> bool:
    require(actor, "manage_roles")
    result = session.execute(delete(RoleGrant).where(RoleGrant.user_id == user.id, RoleGrant.role == role))
    session.expire(user, ["grants"])
    removed = bool(result.rowcount)  # type: ignore[attr-defined]
    record(session, actor, clock, "role.revoke", target_type="user", target_id=user.id, role=role.value, removed=removed)
    return removed


def set_quota(session: Session, actor: Actor, clock: Clock, user: User, quota: int) -> None:
    require(actor, "manage_users")
    old = user.instance_quota
    user.instance_quota = validate_quota(quota)
    record(session, actor, clock, "user.quota", target_type="user", target_id=user.id, old=old, new=quota)


def purge_expired_grants(session: Session, clock: Clock) -> int:
    """Remove grants whose expiry has passed (they already no longer count)."""
    result = session.execute(
        delete(RoleGrant).where(RoleGrant.expires_at.is_not(None), RoleGrant.expires_at <= clock.now())
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
