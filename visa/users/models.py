"""Users, their roles and role grants."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from visa.db import Base, UTCDateTime
from visa.types import enum_column


class Role(enum.StrEnum):
    ADMIN = "ADMIN"
    STAFF = "STAFF"
    IT_SUPPORT = "IT_SUPPORT"
    INSTRUMENT_SCIENTIST = "INSTRUMENT_SCIENTIST"
    INSTRUMENT_CONTROL = "INSTRUMENT_CONTROL"
    SCIENTIFIC_COMPUTING = "SCIENTIFIC_COMPUTING"
    GUEST = "GUEST"


STAFF_ROLES = frozenset({Role.ADMIN, Role.STAFF})

USERNAME_PATTERN = r"^[a-z_][a-z0-9_.-]{0,31}$"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    full_name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str | None] = mapped_column(String(254))
    external_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    uid_number: Mapped[int | None] = mapped_column(Integer)
    gid_number: Mapped[int | None] = mapped_column(Integer)
    home_path: Mapped[str | None] = mapped_column(String(255))
    instance_quota: Mapped[int] = mapped_column(Integer, default=2)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    grants: Mapped[list[RoleGrant]] = relationship(
        back_populates="user", cascade="all, delete-orphan", foreign_keys="RoleGrant.user_id"
    )

    def roles_at(self, when: datetime) -> set[Role]:
        """Roles in force at ``when``: expired grants no longer count."""
        return {g.role for g in self.grants if g.expires_at is None or g.expires_at > when}

    def __repr__(self) -> str:
        return f"<User {self.id} {self.username!r}>"


class RoleGrant(Base):
    """A role held by a user, possibly until a given time (GUEST is time-limited)."""

    __tablename__ = "role_grants"
    __table_args__ = (UniqueConstraint("user_id", "role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[Role] = mapped_column(enum_column(Role))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    granted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    user: Mapped[User] = relationship(back_populates="grants", foreign_keys=[user_id])

    def __repr__(self) -> str:
        return f"<RoleGrant {self.role} user={self.user_id} until={self.expires_at}>"


class ApiToken(Base):
    """A personal token for scripts: only its hash is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[str] = mapped_column(String(255), default="api")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"<ApiToken {self.prefix}… user={self.user_id}>"
