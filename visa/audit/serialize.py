"""Audit events as the API shows them."""

from __future__ import annotations

from visa.audit.models import AuditEvent
from visa.audit.schemas import AuditOut


def audit_out(e: AuditEvent) -> AuditOut:
    return AuditOut(id=e.id, at=e.at, actor=e.actor_name, action=e.action, target_type=e.target_type,
                    target_id=e.target_id, details=e.details or {}, ip=e.ip)
