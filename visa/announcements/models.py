"""Announcements shown to users in visa's pages: banners and modals, and who has acknowledged them."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Text
from sqlalchemy.orm import Mapped, mapped_column

from visa.db import Base, UTCDateTime
from visa.types import enum_column


class NotificationLevel(enum.StrEnum):
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class NotificationKind(enum.StrEnum):
    BANNER = "BANNER"
    MODAL = "MODAL"


class SystemNotification(Base):
    __tablename__ = "system_notifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    message: Mapped[str] = mapped_column(Text)
    level: Mapped[NotificationLevel] = mapped_column(enum_column(NotificationLevel))
    kind: Mapped[NotificationKind] = mapped_column(enum_column(NotificationKind))
    active_from: Mapped[datetime | None] = mapped_column(UTCDateTime)
    active_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class NotificationAck(Base):
    __tablename__ = "notification_acks"

    notification_id: Mapped[int] = mapped_column(
        ForeignKey("system_notifications.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    acknowledged_at: Mapped[datetime] = mapped_column(UTCDateTime)
