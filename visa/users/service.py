"""Users: accounts, role grants with expiry, quotas."""

from __future__ import annotations

import functools
import getpass
import os
import posixpath
import pwd
import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session, selectinload
from werkzeug.security import check_password_hash, generate_password_hash

from visa.actor import SYSTEM, Actor
from visa.audit.service import record
from visa.clock import Clock
from visa.errors import Conflict, Forbidden, InvalidInput, NotFound
from visa.paging import escape_like, page_of
from visa.policy import require
from visa.settings import PosixSettings, home_refusal
from visa.users.models import USERNAME_PATTERN, LoginSession, Role, RoleGrant, User
from visa.users.schemas import UserQuery

_USERNAME = re.compile(USERNAME_PATTERN)
MIN_PASSWORD = 8


def validate_username(username: str) -> str:
    if not isinstance(username, str) or not _USERNAME.fullmatch(username):
        shown = username[:40] + "…" if isinstance(username, str) and len(username) > 40 else username
        raise InvalidInput(
            f"invalid username {shown!r}: 1-32 characters, lowercase letters, digits, '_', '.', '-', "
            "starting with a letter or '_'",
            field="username",
        )
    return username


def reserved_usernames(probe_username: str = "visa") -> frozenset[str]:
    """Names no visa account may take: ``root``, the unix login visa runs as and the activity
    probe's account (``provisioning.probe_username``). Whoever had one would be taken for
    that account by a machine or a host (a VM's probe login, the local cloud's operator)."""
    try:
        login = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        login = getpass.getuser()
    return frozenset({"root", login, probe_username})


def refuse_reserved(username: str, reserved: Collection[str]) -> None:
    if username in reserved:
        raise InvalidInput(
            f"the username {username!r} is reserved (root, visa's own unix account or the activity probe's)",
            field="username",
        )


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
    actor: Actor,
    session: Session,
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
    reserved: Collection[str] | None = None,
) -> User:
    """A new account; ``reserved``: the names it may not have (default ``reserved_usernames()``)."""
    require(actor, "manage_users")
    validate_username(username)
    refuse_reserved(username, reserved_usernames() if reserved is None else reserved)
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
    record(actor, session, clock, "user.create", target_type="user", target_id=user.id, username=username)
    return user


# --- unix identity (uid, gid, groups, home) -----------------------------------------------------

# Where a unix identity comes from, first first: a source never overrides what an earlier one
# set (the identity provider's claims are the facility's directory; the import is the user
# office's; the command line and the admin page are an operator's, either may correct the other).
SOURCES: dict[str, int] = {"oidc": 0, "import": 1, "cli": 2, "admin": 2}
SOURCE_NAMES = {"oidc": "the identity provider", "import": "the user-office import", "cli": "the command line",
                "admin": "the admin page"}
MAX_POSIX_ID = 2**31 - 2  # the column is a 32-bit integer; 2**32 - 1 is (uid_t) -1 anyway
MAX_GROUPS = 64
_HOME = re.compile(r"/[A-Za-z0-9._@+-]+(/[A-Za-z0-9._@+-]+)*")


@dataclass(frozen=True)
class Posix:
    """A unix identity as a source gives it; ``None`` where the source has no value."""

    uid_number: int | None = None
    gid_number: int | None = None
    extra_gids: tuple[int, ...] = ()
    home_path: str | None = None

    def is_empty(self) -> bool:
        return self.uid_number is None and self.gid_number is None and not self.extra_gids and not self.home_path


def _posix_id(value: object, field: str, low: int, high: int = MAX_POSIX_ID, high_name: str = "") -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"{field} must be a whole number", field=field)
    if value < low:
        raise InvalidInput(f"{field} {value} is below {low}, the system's range: refused", field=field)
    if value > high:
        raise InvalidInput(f"{field} {value} is above {high}{f', {high_name}' if high_name else ''}: refused",
                           field=field)
    return value


def validate_posix(posix: Posix, *, limits: PosixSettings) -> Posix:
    """The identity with each value checked (gids within ``min_gid``..``max_gid``, the home inside
    ``home_roots`` and never a system directory); InvalidInput names the first bad field."""
    uid = None if posix.uid_number is None else _posix_id(posix.uid_number, "uid_number", limits.min_uid)
    gid = None if posix.gid_number is None else _posix_id(posix.gid_number, "gid_number", limits.min_gid,
                                                            limits.max_gid, "posix.max_gid")
    if len(posix.extra_gids) > MAX_GROUPS:
        raise InvalidInput(f"more than {MAX_GROUPS} extra groups", field="extra_gids")
    groups = tuple(dict.fromkeys(_posix_id(g, "extra_gids", limits.min_gid, limits.max_gid, "posix.max_gid")
                                 for g in posix.extra_gids))
    home = posix.home_path
    if home is not None and (not isinstance(home, str) or len(home) > 255 or not _HOME.fullmatch(home)
            or posixpath.normpath(home) != home or any(p in (".", "..") for p in home.split("/"))):
        raise InvalidInput(
            f"home_path {str(home)[:60]!r} must be a normalised absolute path (letters, digits, . _ @ + -)",
            field="home_path",
        )
    if home is not None and (why := home_refusal(home, limits.home_roots)) is not None:
        raise InvalidInput(f"home_path {why}", field="home_path")
    return Posix(uid, gid, groups, home)


def set_posix(
    actor: Actor, session: Session, clock: Clock, user: User, posix: Posix, *, source: str,
    limits: PosixSettings,
) -> bool:
    """Set the user's unix identity from ``source`` (one of ``SOURCES``); whether it changed.

    Refused: a value below the system range, a uid another account has (``Conflict``), and a
    source that comes after the one that set the identity (``Conflict`` naming that one). Each
    change is audited with the old and new values."""
    require(actor, "manage_users")
    if source not in SOURCES:
        raise ValueError(f"unknown identity source {source!r}")
    if source not in limits.sources:
        raise Forbidden(f"posix.sources does not name {SOURCE_NAMES[source]} ({source}): its unix identities "
                        "are not taken", field="source")
    checked = validate_posix(posix, limits=limits)
    if user.posix_source is not None and SOURCES[source] > SOURCES.get(user.posix_source, 99):
        raise Conflict(
            f"{user.username}'s unix identity comes from {SOURCE_NAMES.get(user.posix_source, user.posix_source)}: "
            "change it there", field="source",
        )
    if checked.uid_number is not None:
        other = session.scalar(
            select(User.username).where(User.uid_number == checked.uid_number, User.id != user.id)
        )
        if other is not None:
            raise Conflict(f"uid {checked.uid_number} is already {other}'s", field="uid_number")
    old = posix_of(user)
    if old == checked and user.posix_source == source:
        return False
    user.uid_number, user.gid_number = checked.uid_number, checked.gid_number
    user.extra_gids, user.home_path = list(checked.extra_gids), checked.home_path
    old_source, user.posix_source = user.posix_source, source
    session.flush()
    record(actor, session, clock, "user.posix", target_type="user", target_id=user.id, source=source,
           old_source=old_source, old=_posix_dict(old), new=_posix_dict(checked))
    return True


def unix_ids_in_use(session: Session, but: User) -> tuple[set[int], set[int]]:
    """The uids (facility identity, recorded host account) and gids other visa users have: what
    an account made for ``but`` must not take."""
    uids: set[int] = set()
    gids: set[int] = set()
    rows = session.execute(
        select(User.uid_number, User.gid_number, User.unix_account_uid, User.extra_gids).where(User.id != but.id)
    )
    for uid, gid, account_uid, extra in rows:
        uids.update(n for n in (uid, account_uid) if n is not None)
        gids.update(g for g in (gid, *(extra or ())) if isinstance(g, int))
    return uids, gids


def record_unix_account(session: Session, clock: Clock, user: User, name: str, uid: int) -> None:
    """Record the host account ``name`` (uid ``uid``) as the user's: from now on the only one their
    local sessions run as. The database refuses a name or uid another user has (IntegrityError)."""
    user.unix_account, user.unix_account_uid = name, uid
    session.flush()
    record(SYSTEM, session, clock, "user.unix_account", target_type="user", target_id=user.id, name=name, uid=uid)


def adopt_unix_account(
    actor: Actor, session: Session, clock: Clock, user: User, name: str, uid: int, *, replace: bool = False
) -> None:
    """Record an account the host already has (checked by the caller: ``name`` has uid ``uid``) as
    the user's, as an operator does for an account made before accounts were recorded, or for the
    facility's own account of the user. Refused: a name or uid another visa user has (recorded, or
    as their facility identity), and a user who has another recorded account unless ``replace``."""
    require(actor, "record_unix_account")
    if (user.unix_account, user.unix_account_uid) == (name, uid):
        return
    if user.unix_account is not None and not replace:
        raise Conflict(
            f"{user.username} already runs as the unix account {user.unix_account}: give --replace to change it",
            field="account",
        )
    if user.uid_number is not None and user.uid_number != uid:
        raise Conflict(f"{user.username}'s uid is {user.uid_number}, not {name}'s {uid}", field="account")
    holder = session.scalar(select(User.username).where(User.unix_account == name, User.id != user.id))
    if holder is not None:
        raise Conflict(f"the unix account {name} is recorded as {holder}'s", field="account")
    uids, _gids = unix_ids_in_use(session, user)
    if uid in uids:
        raise Conflict(f"uid {uid} is another visa user's", field="account")
    record_unix_account(session, clock, user, name, uid)


def posix_of(user: User) -> Posix:
    return Posix(user.uid_number, user.gid_number, tuple(user.extra_gids or ()), user.home_path)


def _posix_dict(p: Posix) -> dict[str, object]:
    return {"uid_number": p.uid_number, "gid_number": p.gid_number, "extra_gids": list(p.extra_gids),
            "home_path": p.home_path}


def set_password(actor: Actor, session: Session, clock: Clock, user: User, password: str) -> None:
    require(actor, "manage_users")
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"password shorter than {MIN_PASSWORD} characters", field="password")
    user.password_hash = generate_password_hash(password)
    ended = end_sessions(session, user)
    record(actor, session, clock, "user.password", target_type="user", target_id=user.id, sessions_ended=ended)


def end_sessions(session: Session, user: User) -> int:
    """End every login session of the user, in every browser; how many there were."""
    result = session.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def revoke_sessions(actor: Actor, session: Session, clock: Clock, user: User) -> int:
    """An administrator logs the user out everywhere (a stolen cookie stops working)."""
    require(actor, "manage_users")
    ended = end_sessions(session, user)
    record(actor, session, clock, "user.sessions.revoke", target_type="user", target_id=user.id, ended=ended)
    return ended


def link_identity(actor: Actor, session: Session, clock: Clock, user: User, issuer: str, subject: str) -> None:
    """An administrator links an account to an identity provider's identity (issuer and subject):
    the only way an existing account comes to be used through the provider."""
    require(actor, "manage_users")
    if not 0 < len(issuer) <= 255:
        raise InvalidInput("issuer must be 1-255 characters", field="issuer")
    if not 0 < len(subject) <= 255:
        raise InvalidInput("subject must be 1-255 characters", field="subject")
    if user.external_id is not None:
        raise Conflict(f"{user.username} is already linked to an identity", field="username")
    other = session.scalar(select(User).where(User.identity_issuer == issuer, User.external_id == subject))
    if other is not None:
        raise Conflict(f"that identity already has the account {other.username}", field="subject")
    user.identity_issuer, user.external_id = issuer, subject
    record(actor, session, clock, "user.identity.link", target_type="user", target_id=user.id,
           issuer=issuer, subject=subject)


def set_active(actor: Actor, session: Session, clock: Clock, user: User, active: bool) -> None:
    """Deactivate (logged out everywhere, tokens and logins refused) or reactivate an account."""
    require(actor, "manage_users")
    if not active and actor.id == user.id:
        raise Conflict("you cannot deactivate your own account", field="active")
    old = user.active
    user.active = active
    ended = 0 if active else end_sessions(session, user)
    record(actor, session, clock, "user.active", target_type="user", target_id=user.id, old=old, new=active,
           sessions_ended=ended)


@functools.cache
def _dummy_hash() -> str:
    return generate_password_hash(secrets.token_urlsafe(16))


def check_password(user: User | None, password: str) -> bool:
    """Whether this is the active user's local password. A password is hashed whatever the
    account (none, no local password, inactive): the answer takes as long, so its timing does
    not tell which usernames exist."""
    stored = user.password_hash if user is not None and user.password_hash else _dummy_hash()
    matches = check_password_hash(stored, password)
    return matches and user is not None and stored == user.password_hash and user.active


def grant_role(
    actor: Actor,
    session: Session,
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
        actor, session, clock, "role.grant", target_type="user", target_id=user.id,
        role=role.value, expires_at=expires_at.isoformat() if expires_at else None,
    )
    return grant


def revoke_role(actor: Actor, session: Session, clock: Clock, user: User, role: Role) -> bool:
    require(actor, "manage_roles")
    result = session.execute(delete(RoleGrant).where(RoleGrant.user_id == user.id, RoleGrant.role == role))
    session.expire(user, ["grants"])
    removed = bool(result.rowcount)  # type: ignore[attr-defined]
    record(actor, session, clock, "role.revoke", target_type="user", target_id=user.id, role=role.value, removed=removed)
    return removed


def set_quota(actor: Actor, session: Session, clock: Clock, user: User, quota: int) -> None:
    require(actor, "manage_users")
    old = user.instance_quota
    user.instance_quota = validate_quota(quota)
    record(actor, session, clock, "user.quota", target_type="user", target_id=user.id, old=old, new=quota)


def purge_expired_grants(session: Session, clock: Clock) -> int:
    """Remove grants whose expiry has passed (they already no longer count)."""
    result = session.execute(
        delete(RoleGrant).where(RoleGrant.expires_at.is_not(None), RoleGrant.expires_at <= clock.now())
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def holders_of(session: Session, role: Role, when: datetime) -> list[User]:
    """Active users who hold ``role`` at ``when`` (those to tell about what their role handles)."""
    return list(session.scalars(
        select(User).join(RoleGrant, RoleGrant.user_id == User.id)
        .where(User.active.is_(True), RoleGrant.role == role,
               or_(RoleGrant.expires_at.is_(None), RoleGrant.expires_at > when))
        .order_by(User.id)
    ))


# --- listing (administrators) ---------------------------------------------------------------


def list_users(actor: Actor, session: Session, clock: Clock, q: UserQuery) -> tuple[list[User], int]:
    """Users matching a search, a page at a time (their grants loaded)."""
    require(actor, "manage_users")
    query = select(User)
    if q.q:
        like = f"%{escape_like(q.q)}%"
        query = query.where(or_(
            User.username.ilike(like, escape="\\"), User.full_name.ilike(like, escape="\\"),
            User.email.ilike(like, escape="\\"),
        ))
    if q.role:
        now = clock.now()
        query = query.where(User.id.in_(
            select(RoleGrant.user_id).where(
                RoleGrant.role == q.role, or_(RoleGrant.expires_at.is_(None), RoleGrant.expires_at > now)
            )
        ))
    users, total = page_of(session, query.order_by(User.username), q.page, q.per_page)
    ids = [u.id for u in users]
    if ids:
        # One query for every listed user's grants rather than one per user.
        session.scalars(select(User).where(User.id.in_(ids)).options(selectinload(User.grants))).all()
    return users, total


def all_users(actor: Actor, session: Session) -> list[User]:
    """Every account, by name (for the operator's ``visa users list``)."""
    require(actor, "manage_users")
    return list(session.scalars(select(User).order_by(User.username)))


def find_user(actor: Actor, session: Session, username: str) -> User:
    """A user, for those who manage users."""
    require(actor, "manage_users")
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user {username[:40]!r}", field="username")
    return user
