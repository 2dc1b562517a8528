"""System notifications: banners and modals admins publish, each acknowledged once per user."""

from __future__ import annotations

from sqlalchemy import and_, func, or_, select
from sqlalchemy import delete as sql_delete
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.announcements.models import NotificationAck, SystemNotification
from visa.audit.service import record
from visa.clock import Clock
from visa.errors import InvalidInput, NotFound, Unauthorized
from visa.policy import require


def _check_window(active_from, active_until) -> None:
    for value, name in ((active_from, "active_from"), (active_until, "active_until")):
        if value is not None and value.tzinfo is None:
            raise InvalidInput("give the time with a time zone", field=name)
    if active_from and active_until and active_until <= active_from:
        raise InvalidInput("active_until must be after active_from", field="active_until")


def _active_clause(now):
    return and_(
        SystemNotification.deleted_at.is_(None),
        or_(SystemNotification.active_from.is_(None), SystemNotification.active_from <= now),
        or_(SystemNotification.active_until.is_(None), SystemNotification.active_until > now),
    )


def active_for(actor: Actor, session: Session, clock: Clock) -> list[SystemNotification]:
    """Notifications in force now that this user has not acknowledged yet."""
    if actor.user is None:
        raise Unauthorized("log in first")
    acked = select(NotificationAck.notification_id).where(NotificationAck.user_id == actor.user.id)
    return list(session.scalars(
        select(SystemNotification)
        .where(_active_clause(clock.now()), SystemNotification.id.not_in(acked))
        .order_by(SystemNotification.id)
    ))


def acknowledge(actor: Actor, session: Session, clock: Clock, notification_id: int) -> None:
    """Acknowledging twice is fine; acknowledging one that does not exist is not."""
    if actor.user is None:
        raise Unauthorized("log in first")
    n = session.get(SystemNotification, notification_id)
    if n is None or n.deleted_at is not None:
        raise NotFound("no such notification", field="id")
    if session.get(NotificationAck, (notification_id, actor.user.id)) is None:
        session.add(NotificationAck(notification_id=notification_id, user_id=actor.user.id,
                                    acknowledged_at=clock.now()))
        session.flush()


def list_all(actor: Actor, session: Session) -> list[tuple[SystemNotification, int]]:
    require(actor, "manage_notifications")
    acks = (
        select(NotificationAck.notification_id, func.count().label("n"))
        .group_by(NotificationAck.notification_id).subquery()
    )
    rows = session.execute(
        select(SystemNotification, func.coalesce(acks.c.n, 0))
        .outerjoin(acks, acks.c.notification_id == SystemNotification.id)
        .where(SystemNotification.deleted_at.is_(None))
        .order_by(SystemNotification.id.desc())
    ).all()
    return [(n, int(c)) for n, c in rows]


def get(actor: Actor, session: Session, notification_id: int) -> SystemNotification:
    require(actor, "manage_notifications")
    n = session.get(SystemNotification, notification_id)
    if n is None or n.deleted_at is not None:
        raise NotFound("no such notification", field="id")
    return n


def create(actor: Actor, session: Session, clock: Clock, **fields) -> SystemNotification:
    require(actor, "manage_notifications")
    _check_window(fields.get("active_from"), fields.get("active_until"))
    n = SystemNotification(created_at=clock.now(), **fields)
    session.add(n)
    session.flush()
    record(actor, session, clock, "notification.create", target_type="notification", target_id=n.id,
           kind=n.kind.value, level=n.level.value)
    return n


def update(actor: Actor, session: Session, clock: Clock, notification_id: int, **fields) -> SystemNotification:
    n = get(actor, session, notification_id)
    _check_window(fields.get("active_from"), fields.get("active_until"))
    for key, value in fields.items():
        setattr(n, key, value)
    # A changed message must be seen again, even by those who acknowledged the old one.
    session.execute(sql_delete(NotificationAck).where(NotificationAck.notification_id == n.id))
    session.flush()
    record(actor, session, clock, "notification.update", target_type="notification", target_id=n.id)
    return n


def delete(actor: Actor, session: Session, clock: Clock, notification_id: int) -> None:
    n = get(actor, session, notification_id)
    n.deleted_at = clock.now()
    record(actor, session, clock, "notification.delete", target_type="notification", target_id=n.id)
