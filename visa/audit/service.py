"""Writing to the audit log (in the caller's transaction)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.audit.models import AuditEvent
from visa.clock import Clock


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
