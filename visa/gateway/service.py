"""The gateway's rules: one-time connect tokens, where an instance answers, activity.

Plain functions on a SQLAlchemy session, like every service: the Flask endpoint issues
tokens in its request transaction; the websocket and proxy code runs these functions in
a worker thread (``anyio.to_thread``) with a session of their own.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from visa.actor import Actor, actor_for
from visa.audit.service import record
from visa.auth.sessions import live_login_session_by_hash, session_epoch
from visa.catalogue.models import Protocol
from visa.clock import Clock
from visa.errors import Conflict, Forbidden, NotFound, Unauthorized
from visa.instances.models import ConnectToken, Instance, InstanceState, MemberRole
from visa.policy import allowed, member_role, require
from visa.sharing import presence
from visa.users.models import User


class OwnerAway(Conflict):
    """A member may not connect now: the instance admits its members only while the owner is connected."""

    code = "waiting_for_owner"


# A desktop or Jupyter answers in these states (PARTIALLY_ACTIVE: the desktop is up).
CONNECTABLE_STATES = frozenset({InstanceState.ACTIVE, InstanceState.PARTIALLY_ACTIVE})


def hash_token(token: str, binding: str = "", purpose: str = "desktop") -> str:
    """What is stored of a one-time token. The purpose and the browser session it was issued to
    are part of the hash: a Jupyter token opens no desktop, and a desktop token presented from
    another browser session matches no row."""
    if purpose == "desktop" and not binding:
        return hashlib.sha256(token.encode()).hexdigest()
    return hashlib.sha256(f"{purpose}\0{binding}\0{token}".encode()).hexdigest()


@dataclass(frozen=True)
class Target:
    """Where a protocol of an instance answers, and the secret it wants."""

    instance_id: int
    host: str
    port: int
    secret: str
    # A unix socket of this host, when the protocol answers there rather than at host:port.
    socket: str | None = None
    # RDP: the desktop is an RDP server, shown through visa's bridge (``visa.gateway.rdp``), which
    # logs in as ``username`` with the secret at the screen size asked for.
    protocol: Protocol = Protocol.VNC
    username: str = ""
    screen: tuple[int, int] = (1280, 800)
    keyboard_layout: str = "en-us"

    def __repr__(self) -> str:  # never print the secret
        where = self.socket or f"{self.host}:{self.port}"
        return f"Target(instance={self.instance_id}, {where})"


@dataclass(frozen=True)
class Grant:
    """A consumed connect token: who is connected to which instance's desktop, how."""

    user_id: int
    instance_id: int
    role: MemberRole
    view_only: bool
    target: Target
    # The login session the token was bound to ("" for an API token's client): when it ends
    # (logout, revocation), the open desktop ends with it.
    login: str = ""
    # The owner's policy: whether the desktop's clipboard reaches this member while view only.
    clipboard_to_viewers: bool = False


def _live_instance(session: Session, uid: str) -> Instance | None:
    return session.scalar(select(Instance).where(Instance.uid == uid, Instance.deleted_at.is_(None)))


def target_for(instance: Instance, protocol: Protocol) -> Target:
    """Where one protocol answers: the provider's unix socket or port if it reported one (the
    local cloud runs many sessions on one host), otherwise the image's port on the instance address."""
    if instance.state not in CONNECTABLE_STATES:
        raise Conflict(f"the instance is {instance.state.value}, not running")
    if not instance.address:
        raise Conflict("the instance has no address yet")
    sockets = (instance.provider_state or {}).get("sockets") or {}
    if (path := sockets.get(protocol.value)) is not None:
        return Target(instance.id, instance.address, 0, instance.secret, socket=str(path))
    ports = (instance.provider_state or {}).get("ports") or {}
    port = ports.get(protocol.value)
    if port is None:
        port = next((p.port for p in instance.plan.image.protocols if p.protocol == protocol), None)
    if port is None:
        raise Conflict(f"the instance's image offers no {protocol.value}")
    return Target(instance.id, instance.address, int(port), instance.secret)


def desktop_target(instance: Instance) -> Target:
    """Where the desktop answers: the machine's VNC server, else its RDP server (an image that
    offers RDP and no VNC, a Windows machine or one running xrdp), as its owner's account."""
    offered = {p.protocol for p in instance.plan.image.protocols}
    if Protocol.VNC in offered or Protocol.RDP not in offered:
        return target_for(instance, Protocol.VNC)
    rdp = target_for(instance, Protocol.RDP)
    return replace(rdp, protocol=Protocol.RDP, username=instance.owner.username,
                   screen=(instance.screen_width, instance.screen_height), keyboard_layout=instance.keyboard_layout)


def connect_role(actor: Actor, instance: Instance) -> MemberRole:
    """The member role a connection has; admins who are not members connect as support."""
    return member_role(actor, instance) or MemberRole.SUPPORT


def issue_connect_token(
    actor: Actor, session: Session, clock: Clock, instance: Instance, seconds: int, binding: str = ""
) -> tuple[str, MemberRole, bool]:
    """A one-time desktop token for this actor and instance; only its hash is stored.

    ``binding`` is the stored id of the login session that asks (empty for an API token):
    only a websocket from that session, while it lasts, can spend the token.
    Returns the token, the connection's role and whether it is view only."""
    if not allowed(actor, "instance.connect", instance) and presence.waiting_for_owner(actor, instance, clock.now()):
        raise OwnerAway("waiting for the owner: members may connect while the owner is connected")
    require(actor, "instance.connect", instance)
    if actor.user is None:
        raise Forbidden("the system does not open desktops")
    desktop_target(instance)  # refuse now rather than in the websocket
    token = secrets.token_urlsafe(32)
    now = clock.now()
    role = connect_role(actor, instance)
    session.add(
        ConnectToken(
            token_hash=hash_token(token, binding),
            instance_id=instance.id,
            user_id=actor.user.id,
            role=role,
            created_at=now,
            expires_at=now + timedelta(seconds=seconds),
        )
    )
    record(
        actor,
        session,
        clock,
        "instance.connect",
        target_type="instance",
        target_id=instance.uid,
        role=role.value,
    )
    session.flush()
    return token, role, not allowed(actor, "instance.input", instance)


def _spend(session: Session, now: datetime, instance: Instance, token_hash: str) -> ConnectToken:
    # One UPDATE decides: two sockets racing with the same token cannot both win.
    spent = session.execute(
        update(ConnectToken)
        .where(
            ConnectToken.token_hash == token_hash,
            ConnectToken.instance_id == instance.id,
            ConnectToken.used_at.is_(None),
            ConnectToken.expires_at > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        raise Unauthorized("invalid connect token")
    row = session.scalar(select(ConnectToken).where(ConnectToken.token_hash == token_hash))
    assert row is not None
    return row


def consume_connect_token(session: Session, clock: Clock, uid: str, token: str, binding: str = "") -> Grant:
    """Spend a token on the desktop of instance ``uid`` from the browser session ``binding``;
    raises Unauthorized when it is unknown, used, expired, for another instance or issued to
    another browser session, Forbidden when the user lost access."""
    if not token:
        raise Unauthorized("no connect token")
    now = clock.now()
    instance = _live_instance(session, uid)
    if instance is None:
        raise Unauthorized("invalid connect token")
    if binding and live_login_session_by_hash(session, binding) is None:
        raise Unauthorized("invalid connect token")  # the session that asked has ended: not spent
    row = _spend(session, now, instance, hash_token(token, binding))
    user = session.get(User, row.user_id)
    actor = actor_for(user, now) if user is not None and user.active else None
    if actor is None or not allowed(actor, "instance.connect", instance):
        raise Forbidden("no longer a member of this instance")
    instance.last_seen_at = now
    return Grant(
        user_id=row.user_id,
        instance_id=instance.id,
        role=connect_role(actor, instance),
        view_only=not allowed(actor, "instance.input", instance),
        target=desktop_target(instance),
        login=binding,
        clipboard_to_viewers=instance.clipboard_to_viewers,
    )


def check_access(
    session: Session, clock: Clock, user_id: int, instance_id: int, action: str, login: str = ""
) -> bool | None:
    """Whether the user may still do ``action`` on the instance: None if not at all any more
    (or the login session ``login`` has ended), else whether ``instance.input`` is still
    allowed (False: view only)."""
    instance = session.get(Instance, instance_id)
    user = session.get(User, user_id)
    if instance is None or instance.deleted_at is not None or user is None or not user.active:
        return None
    if login and live_login_session_by_hash(session, login) is None:
        return None
    actor = actor_for(user, clock.now())
    if not allowed(actor, action, instance):
        return None
    return allowed(actor, "instance.input", instance)


def waiting_for_owner(session: Session, clock: Clock, user_id: int, instance_id: int) -> bool:
    """Whether the user is kept out of the instance only because its owner is not connected."""
    instance = session.get(Instance, instance_id)
    user = session.get(User, user_id)
    if instance is None or user is None or not user.active:
        return False
    actor = actor_for(user, clock.now())
    return not allowed(actor, "instance.connect", instance) and presence.waiting_for_owner(actor, instance, clock.now())


def record_activity(session: Session, instance_id: int, seen: datetime, interaction: datetime | None) -> None:
    """Note that someone used the instance (any message) or typed / moved the mouse."""
    values: dict[str, datetime] = {"last_seen_at": seen}
    if interaction is not None:
        values["last_interaction_at"] = interaction
    session.execute(update(Instance).where(Instance.id == instance_id).values(**values))


def issue_jupyter_token(
    actor: Actor, session: Session, clock: Clock, instance: Instance, seconds: int, login: str
) -> str:
    """A one-time token that the instance's user-content host exchanges for a cookie of its own.

    ``login`` is the stored id of the visa login session that asks: the token names it (it is a
    hash, no credential) and is bound to it, and the lab lasts only as long as that session."""
    require(actor, "instance.jupyter", instance)
    if actor.user is None:
        raise Forbidden("the system does not open JupyterLab")
    if live_login_session_by_hash(session, login, actor.user.id) is None:
        raise Unauthorized("open JupyterLab from a browser session of visa")
    target_for(instance, Protocol.JUPYTER)
    return _owner_content_token(session, clock, instance, actor.user.id, seconds, login, "jupyter")


def _owner_content_token(session: Session, clock: Clock, instance: Instance, user_id: int, seconds: int,
                         login: str, purpose: str) -> str:
    """A one-time token of the owner's for a user-content host, bound to ``login`` and ``purpose``."""
    token = secrets.token_urlsafe(32)  # no "." in it
    now = clock.now()
    session.add(
        ConnectToken(
            token_hash=hash_token(token, login, purpose=purpose),
            instance_id=instance.id,
            user_id=user_id,
            role=MemberRole.OWNER,
            created_at=now,
            expires_at=now + timedelta(seconds=seconds),
        )
    )
    session.flush()
    return f"{token}.{login}"


@dataclass(frozen=True)
class LabLogin:
    """Whom a spent Jupyter token speaks for: the user, their session epoch and login session."""

    user_id: int
    epoch: str
    login: str


def consume_jupyter_token(session: Session, clock: Clock, uid: str, token: str) -> LabLogin:
    """Spend a Jupyter token on instance ``uid`` while the login session that asked for it lasts,
    or Unauthorized."""

    return _consume(session, clock, uid, token, "jupyter",
                    "invalid or expired link: open JupyterLab from visa again")


def _consume(session: Session, clock: Clock, uid: str, token: str, purpose: str, invalid: str) -> LabLogin:
    """Spend a one-time token of ``purpose`` on the live instance ``uid`` while the login session
    that asked for it lasts: the login of its user, or Unauthorized(``invalid``)."""
    secret, _, login = token.partition(".")
    instance = _live_instance(session, uid) if secret and login else None
    if instance is None or live_login_session_by_hash(session, login) is None:
        raise Unauthorized(invalid)
    try:
        row = _spend(session, clock.now(), instance, hash_token(secret, login, purpose=purpose))
    except Unauthorized as exc:
        raise Unauthorized(invalid) from exc
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        raise Unauthorized("log in first")
    return LabLogin(user.id, session_epoch(user), login)


def jupyter_target(
    session: Session, clock: Clock, user_id: int, epoch: str | None, login: str | None, uid: str
) -> Target:
    """The Jupyter server of instance ``uid`` for the user of a lab cookie: Unauthorized once the
    login session it came from has ended (logout, revocation, expiry, password change,
    deactivation), NotFound for anyone but the instance's owner."""

    user = session.get(User, user_id)
    if user is None or not user.active or epoch != session_epoch(user):
        raise Unauthorized("log in first")
    if live_login_session_by_hash(session, login, user_id) is None:
        raise Unauthorized("log in first")
    instance = _live_instance(session, uid)
    actor = actor_for(user, clock.now())
    if instance is None or not allowed(actor, "instance.jupyter", instance):
        raise NotFound("no such instance")
    return target_for(instance, Protocol.JUPYTER)


def web_service_host(uid: str, name: str) -> str:
    """The user-content host label of a declared web service: ``<uid>-<name>`` (an instance uid
    has no "-", so the label names both, and no instance's own host is one)."""
    return f"{uid}-{name}"


def _split_host(label: str) -> tuple[str, str]:
    uid, _, name = label.partition("-")
    return uid, name


def web_service_target_for(instance: Instance, name: str) -> Target:
    """Where a declared web service answers: the port the provider reported for it
    (``ports["web:<name>"]``), else the image's. It gets no secret: visa authenticates."""
    port = instance.plan.image.web_service_port(name)
    if port is None:
        raise NotFound("no such web service")
    if instance.state not in CONNECTABLE_STATES:
        raise Conflict(f"the instance is {instance.state.value}, not running")
    if not instance.address:
        raise Conflict("the instance has no address yet")
    reported = ((instance.provider_state or {}).get("ports") or {}).get(f"web:{name}")
    return Target(instance.id, instance.address, int(reported or port), "")


def issue_web_service_token(
    actor: Actor, session: Session, clock: Clock, instance: Instance, name: str, seconds: int, login: str
) -> str:
    """A one-time token that the web service's own user-content host exchanges for a cookie of
    its own; bound to the login session ``login`` like a Jupyter token, and to the service."""
    require(actor, "instance.web_service", instance)
    if actor.user is None:
        raise Forbidden("the system does not open web services")
    if live_login_session_by_hash(session, login, actor.user.id) is None:
        raise Unauthorized("open the web service from a browser session of visa")
    web_service_target_for(instance, name)
    return _owner_content_token(session, clock, instance, actor.user.id, seconds, login, f"web:{name}")


def consume_web_service_token(session: Session, clock: Clock, host: str, token: str) -> LabLogin:
    """Spend a web service token on the host ``<uid>-<name>`` it was issued for, or Unauthorized."""
    invalid = "invalid or expired link: open the web service from visa again"
    uid, name = _split_host(host)
    if not name:
        raise Unauthorized(invalid)
    return _consume(session, clock, uid, token, f"web:{name}", invalid)


def web_service_target(
    session: Session, clock: Clock, user_id: int, epoch: str | None, login: str | None, host: str
) -> Target:
    """The web service of host ``<uid>-<name>`` for the user of its cookie: Unauthorized once the
    login session it came from has ended, NotFound for anyone but the owner or a service the
    image does not declare."""
    user = session.get(User, user_id)
    if user is None or not user.active or epoch != session_epoch(user):
        raise Unauthorized("log in first")
    if live_login_session_by_hash(session, login, user_id) is None:
        raise Unauthorized("log in first")
    uid, name = _split_host(host)
    instance = _live_instance(session, uid)
    actor = actor_for(user, clock.now())
    if instance is None or not allowed(actor, "instance.web_service", instance):
        raise NotFound("no such instance")
    return web_service_target_for(instance, name)


def purge_connect_tokens(session: Session, clock: Clock) -> int:
    """Delete spent and expired connect tokens (a scheduler job's work); returns how many."""
    result = session.execute(
        delete(ConnectToken).where(
            or_(ConnectToken.used_at.is_not(None), ConnectToken.expires_at <= clock.now())
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
