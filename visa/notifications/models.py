"""System notifications shown to users, and emails sent (once each)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
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


class SentEmail(Base):
    """One row per email event: its unique key makes a send happen once, even across restarts."""

    __tablename__ = "sent_emails"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)
    recipient: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
