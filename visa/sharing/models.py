"""The rows of sharing that the instance itself never reads: invitation links, public view-only
links and support staff's requests to join. Members and connections stay with the instance (``visa.instances.models``):
its rules and lists read them."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from visa.db import Base, UTCDateTime
from visa.instances.models import MemberRole
from visa.types import enum_column

if TYPE_CHECKING:
    from visa.users.models import User


class Invitation(Base):
    """A one-time link to join an instance with a role; only the hash of its secret is stored."""

    __tablename__ = "instance_invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[MemberRole] = mapped_column(enum_column(MemberRole))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    used_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    def __repr__(self) -> str:
        return f"<Invitation {self.id} instance={self.instance_id} {self.role}>"


class ViewLink(Base):
    """A public, view-only link to one instance's desktop, for someone without an account (a talk's
    audience, a remote colleague): time-limited and revocable by the owner who made it; only the
    hash of its secret is stored."""

    __tablename__ = "instance_view_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"<ViewLink {self.id} instance={self.instance_id}>"


class SupportState(enum.StrEnum):
    PENDING = "PENDING"
    ACCEPTED = "ACCEPTED"
    REFUSED = "REFUSED"


class SupportRequest(Base):
    """Support staff asking to join an instance. While ``prompt_until`` has not passed, the owner's
    open page shows a prompt; a request unanswered after it falls back to the consent rules
    (``visa.sharing.service``); after ``expires_at`` it is forgotten."""

    __tablename__ = "support_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    state: Mapped[SupportState] = mapped_column(enum_column(SupportState))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    prompt_until: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    answered_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    requester: Mapped[User] = relationship(lazy="joined", foreign_keys=[requester_id])

    def __repr__(self) -> str:
        return f"<SupportRequest {self.id} instance={self.instance_id} {self.state}>"
