"""Announcements as the API shows them."""

from __future__ import annotations

from visa.announcements.models import SystemNotification
from visa.announcements.schemas import NotificationOut


def notification_out(n: SystemNotification, acknowledged: int | None = None) -> NotificationOut:
    return NotificationOut(id=n.id, message=n.message, level=n.level, kind=n.kind, active_from=n.active_from,
                           active_until=n.active_until, created_at=n.created_at, acknowledged=acknowledged)
