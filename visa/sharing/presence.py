"""Who is connected to an instance now: the gateway's live connections and what they decide.

The gateway (``visa.gateway``) opens a row when a desktop or JupyterLab websocket opens, pushes
its ``expires_at`` forward on every activity tick and deletes it when the socket closes; rows of
a gateway that died expire on their own (``ttl``), and the clean-up job deletes them. Every
member sees the list live (the ``presence`` feed of the event streams); the owner-presence rule
(``visa.policy.rules.OwnerPresent``) reads the owner's rows. A support member's sessions are
audited when they open and close, which is what the owner's page shows of who helped, when.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from visa.actor import Actor, actor_for
from visa.audit.models import AuditEvent
from visa.audit.service import record
from visa.catalogue.models import Image, Plan
from visa.clock import Clock
from visa.db import publish_all
from visa.instances import changes
from visa.instances.listing import RowTarget
from visa.instances.models import ConnectionProtocol, Instance, InstanceConnection, InstanceMember, MemberRole
from visa.policy import member_role, require
from visa.sharing.schemas import ConnectedOut, PresenceEvent, SupportSessionOut
from visa.users.models import User

GATEWAY = f"{socket.gethostname()}:{os.getpid()}"[:128]
SUPPORT_OPEN, SUPPORT_CLOSE = "instance.support.session", "instance.support.session.end"


def open_connection(session: Session, clock: Clock, instance_id: int, user_id: int, role: MemberRole,
                    protocol: ConnectionProtocol, ttl: float) -> int:
    """Note that a socket opened; returns the row's id for the heartbeat and the close."""
    now = clock.now()
    row = InstanceConnection(instance_id=instance_id, user_id=user_id, role=role, protocol=protocol,
                             gateway=GATEWAY, started_at=now, expires_at=now + timedelta(seconds=ttl))
    session.add(row)
    session.flush()
    if role == MemberRole.SUPPORT:
        _audit_support(session, clock, row, SUPPORT_OPEN)
    return row.id


def heartbeat(session: Session, clock: Clock, connection_id: int, ttl: float) -> None:
    session.execute(update(InstanceConnection).where(InstanceConnection.id == connection_id)
                    .values(expires_at=clock.now() + timedelta(seconds=ttl)))


def close_connection(session: Session, clock: Clock, connection_id: int) -> None:
    row = session.get(InstanceConnection, connection_id)
    if row is None:
        return
    if row.role == MemberRole.SUPPORT:
        _audit_support(session, clock, row, SUPPORT_CLOSE)
    session.delete(row)
    session.flush()


def _audit_support(session: Session, clock: Clock, row: InstanceConnection, action: str) -> None:
    instance, user = session.get(Instance, row.instance_id), session.get(User, row.user_id)
    if instance is None or user is None:
        return
    extra = {"seconds": int((clock.now() - row.started_at).total_seconds())} if action == SUPPORT_CLOSE else {}
    record(actor_for(user, clock.now()), session, clock, action, target_type="instance", target_id=instance.uid,
           protocol=row.protocol.value, connection=row.id, **extra)


def purge_expired(session: Session, clock: Clock) -> int:
    """Delete the rows of gateways that stopped beating (a clean-up job's work); returns how many."""
    result = session.execute(delete(InstanceConnection).where(InstanceConnection.expires_at <= clock.now()))
    count = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if count:
        publish_all(session)  # a bulk delete: the hook sees no rows
    return count


def waiting_for_owner(actor: Actor, instance: Instance | RowTarget, now: datetime) -> bool:
    """Whether this member is kept out only because the owner is not connected."""
    role = member_role(actor, instance)
    return (role is not None and role != MemberRole.OWNER and instance.members_need_owner
            and not instance.owner_connected(now))


def _presence(session: Session, rows: list[tuple[int, str, int, bool | None, bool]], now: datetime
              ) -> dict[int, PresenceEvent]:
    ids = [r[0] for r in rows]
    conns = session.execute(
        select(InstanceConnection.instance_id, InstanceConnection.user_id, InstanceConnection.protocol,
               InstanceConnection.role, InstanceConnection.started_at, User.username, User.full_name)
        .join(User, User.id == InstanceConnection.user_id)
        .where(InstanceConnection.instance_id.in_(ids), InstanceConnection.expires_at > now)
        .order_by(InstanceConnection.started_at, InstanceConnection.id)
    ).all() if ids else []
    people: dict[tuple[int, int], ConnectedOut] = {}
    for iid, uid_, protocol, role, started, username, full_name in conns:
        entry = people.get((iid, uid_))
        if entry is None:
            people[(iid, uid_)] = ConnectedOut(username=username, full_name=full_name, role=role.value,
                                               protocols=[protocol.value], since=started)
        elif protocol.value not in entry.protocols:
            entry.protocols.append(protocol.value)
    out = {}
    for iid, uid, owner_id, unrestricted, image_rule in rows:
        connected = [p for (i, _u), p in people.items() if i == iid]
        owner_here = (iid, owner_id) in people
        need_owner = (not unrestricted) if unrestricted is not None else bool(image_rule)
        out[iid] = PresenceEvent(uid=uid, connected=connected, owner_connected=owner_here,
                                 waiting_for_owner=need_owner and not owner_here)
    return out


def _rows_of(session: Session, *where: object) -> list[tuple[int, str, int, bool | None, bool]]:
    stmt = (select(Instance.id, Instance.uid, Instance.owner_id, Instance.unrestricted_member_access,
                   Image.members_need_owner)
            .join(Plan, Plan.id == Instance.plan_id).join(Image, Image.id == Plan.image_id)
            .where(Instance.deleted_at.is_(None), *where))
    return [tuple(r) for r in session.execute(stmt)]  # type: ignore[misc]


def presence_of(actor: Actor, session: Session, clock: Clock, instance: Instance) -> PresenceEvent:
    """Who is connected to the instance now: for its members (and admins)."""
    require(actor, "instance.presence", instance)
    return _presence(session, _rows_of(session, Instance.id == instance.id), clock.now())[instance.id]


@changes.feed("presence", gone=lambda uid: PresenceEvent(uid=uid))
def presence_feed(session: Session, user_id: int, now: datetime) -> dict[str, PresenceEvent]:
    """The ``presence`` events: the instances this user is a member of, and who is on each."""
    member = select(InstanceMember.instance_id).where(InstanceMember.user_id == user_id)
    rows = _rows_of(session, Instance.id.in_(member))
    # Only instances with something to say: nobody there and nobody waiting is the default (its
    # ``gone`` event), so a quiet stream carries no presence at all.
    return {p.uid: p for p in _presence(session, rows, now).values() if p.connected or p.waiting_for_owner}


def support_sessions(actor: Actor, session: Session, instance: Instance, limit: int = 50) -> list[SupportSessionOut]:
    """Who helped on the instance, and when: its support sessions, newest first (owner, admins)."""
    require(actor, "instance.support.history", instance)
    events = session.execute(
        select(AuditEvent, User.full_name)
        .outerjoin(User, User.id == AuditEvent.actor_id)
        .where(AuditEvent.action.in_((SUPPORT_OPEN, SUPPORT_CLOSE)), AuditEvent.target_type == "instance",
               AuditEvent.target_id == instance.uid)
        .order_by(AuditEvent.at, AuditEvent.id)
    ).all()
    sessions: dict[object, SupportSessionOut] = {}
    for event, full_name in events:
        details = event.details or {}
        key = details.get("connection", event.id)
        if event.action == SUPPORT_OPEN:
            sessions[key] = SupportSessionOut(username=event.actor_name, full_name=full_name or "",
                                              protocol=str(details.get("protocol", "")), started_at=event.at)
        elif key in sessions:
            sessions[key].ended_at = event.at
    return sorted(sessions.values(), key=lambda s: s.started_at, reverse=True)[:limit]

