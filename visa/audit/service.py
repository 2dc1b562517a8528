"""Writing to the audit log (in the caller's transaction), and reading it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.audit.models import AuditEvent
from visa.audit.schemas import AuditQuery
from visa.clock import Clock
from visa.errors import InvalidInput
from visa.paging import page_of
from visa.policy import require


def record(
    actor: Actor,
    session: Session,
    clock: Clock,
    action: str,
    *,
    target_type: str | None = None,
    target_id: object = None,
    **details: Any,
) -> AuditEvent:
    event = AuditEvent(
        at=clock.now(),
        actor_id=actor.id,
        actor_name=actor.name[:64],
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id)[:64],
        details=details,
        ip=actor.ip,
    )
    session.add(event)
    return event


def audit_events(actor: Actor, session: Session, q: AuditQuery) -> tuple[list[AuditEvent], int]:
    require(actor, "view_audit")
    query = select(AuditEvent)
    if q.action:
        if q.action.endswith("."):
            query = query.where(AuditEvent.action.startswith(q.action, autoescape=True))
        else:
            query = query.where(AuditEvent.action == q.action)
    if q.actor:
        query = query.where(AuditEvent.actor_name == q.actor)
    if q.target_type:
        query = query.where(AuditEvent.target_type == q.target_type)
    if q.target_id:
        query = query.where(AuditEvent.target_id == q.target_id)
    for value, fieldname in ((q.since, "since"), (q.until, "until")):
        if value is not None and value.tzinfo is None:
            raise InvalidInput("give the time with a time zone", field=fieldname)
    if q.since:
        query = query.where(AuditEvent.at >= q.since)
    if q.until:
        query = query.where(AuditEvent.at < q.until)
    return page_of(session, query.order_by(AuditEvent.id.desc()), q.page, q.per_page)


def instance_history(actor: Actor, session: Session, uid: str, limit: int = 50) -> list[AuditEvent]:
    require(actor, "view_audit")
    return list(
        session.scalars(
            select(AuditEvent)
            .where(AuditEvent.target_type == "instance", AuditEvent.target_id == uid)
            .order_by(AuditEvent.id.desc())
            .limit(limit)
        )
    )
