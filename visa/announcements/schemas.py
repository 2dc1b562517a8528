"""Announcements in and out."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from visa.announcements.models import NotificationKind, NotificationLevel
from visa.types import Input, Timestamp


class NotificationIn(Input):
    message: str = Field(min_length=1, max_length=4000)
    level: NotificationLevel = NotificationLevel.INFO
    kind: NotificationKind = NotificationKind.BANNER
    active_from: datetime | None = None
    active_until: datetime | None = None


class NotificationOut(BaseModel):
    id: int
    message: str
    level: NotificationLevel
    kind: NotificationKind
    active_from: Timestamp | None
    active_until: Timestamp | None
    created_at: Timestamp
    acknowledged: int | None = Field(None, description="How many users acknowledged it (admin view)")
