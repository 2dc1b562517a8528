"""Users, their roles and role grants, and user groups."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from visa.db import Base, UTCDateTime
from visa.policy.roles import STAFF_ROLES as STAFF_ROLES  # re-exported: the roles users hold
from visa.policy.roles import Role
from visa.types import JsonDict, enum_column

# Python code matches it with fullmatch: its $ alone would also match before a trailing "\n".
USERNAME_PATTERN = r"^[a-z_][a-z0-9_.-]{0,31}$"


class User(Base):
    __tablename__ = "users"
    # An identity is the provider's subject within its issuer: two providers may reuse a subject.
    # A uid names one person on the facility's storage: two accounts never share one.
    # A unix account of visa's host (the local cloud's sessions run as it) belongs to one user.
    __table_args__ = (
        UniqueConstraint("identity_issuer", "external_id"), UniqueConstraint("uid_number"),
        UniqueConstraint("unix_account"), UniqueConstraint("unix_account_uid"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    full_name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str | None] = mapped_column(String(254))
    external_id: Mapped[str | None] = mapped_column(String(255))  # the identity provider's subject
    identity_issuer: Mapped[str | None] = mapped_column(String(255))
    # Roles the identity provider's claims gave at the last login or refresh (space separated):
    # what others see of this user (staff status for the owner-consent rule); the user's own
    # requests use their session's roles, which a refresh re-reads.
    idp_roles: Mapped[str] = mapped_column(String(255), default="")
    uid_number: Mapped[int | None] = mapped_column(Integer)
    gid_number: Mapped[int | None] = mapped_column(Integer)
    home_path: Mapped[str | None] = mapped_column(String(255))
    # Supplementary groups (gids) of the account on the facility's storage.
    extra_gids: Mapped[list[int]] = mapped_column(JsonDict, default=list)
    # Which source set the unix identity last (visa.users.posix.SOURCES): a later source in that
    # order never overrides an earlier one's values.
    posix_source: Mapped[str | None] = mapped_column(String(16))
    # The unix account of visa's own host this user's local sessions run as, recorded before it
    # is made: the local cloud creates and adopts accounts only through this record, never by a
    # name or uid it finds on the host.
    unix_account: Mapped[str | None] = mapped_column(String(32))
    unix_account_uid: Mapped[int | None] = mapped_column(Integer)
    instance_quota: Mapped[int] = mapped_column(Integer, default=2)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    grants: Mapped[list[RoleGrant]] = relationship(
        back_populates="user", cascade="all, delete-orphan", foreign_keys="RoleGrant.user_id"
    )

    # Loaded when read (the plans, lifetimes and network rules a user gets), not with every user.
    memberships: Mapped[list[GroupMembership]] = relationship(
        back_populates="user", cascade="all, delete-orphan", lazy="select", passive_deletes=True,
    )

    def roles_at(self, when: datetime) -> set[Role]:
        """Roles in force at ``when``: expired grants no longer count."""
        return {g.role for g in self.grants if g.expires_at is None or g.expires_at > when}

    def group_names(self) -> frozenset[str]:
        """The user groups this user is in (made by administrators or from the identity provider)."""
        return frozenset(m.group.name for m in self.memberships)

    def idp_roles_set(self) -> set[Role]:
        return {Role(r) for r in self.idp_roles.split() if r in Role.__members__}

    def __repr__(self) -> str:
        return f"<User {self.id} {self.username!r}>"


# A group's name, as catalogue files and identity providers' claims give it.
GROUP_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$"


class GroupSource(enum.StrEnum):
    ADMIN = "ADMIN"  # added by an administrator (page, API or command line)
    IDP = "IDP"  # from the identity provider's group claim at the last login: re-read at each


class UserGroup(Base):
    """A named set of users that catalogue limits, lifetimes and network rules may name, as they
    name roles."""

    __tablename__ = "user_groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    memberships: Mapped[list[GroupMembership]] = relationship(
        back_populates="group", cascade="all, delete-orphan", passive_deletes=True,
    )

    def __repr__(self) -> str:
        return f"<UserGroup {self.name!r}>"


class GroupMembership(Base):
    __tablename__ = "group_memberships"

    group_id: Mapped[int] = mapped_column(ForeignKey("user_groups.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    source: Mapped[GroupSource] = mapped_column(enum_column(GroupSource, length=8))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)

    group: Mapped[UserGroup] = relationship(back_populates="memberships", lazy="joined")
    user: Mapped[User] = relationship(back_populates="memberships")


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


class LoginSession(Base):
    """A browser's login, held on the server: the cookie carries only its id, so ending the row
    (logout, password change, deactivation, an administrator's revocation) ends it everywhere.
    Only a hash of the id is stored, and the identity provider's refresh token stays here."""

    __tablename__ = "login_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    method: Mapped[str] = mapped_column(String(16))  # local | oidc
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ip: Mapped[str | None] = mapped_column(String(64))
    refresh_token: Mapped[str | None] = mapped_column(Text)
    refresh_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # next refresh at the provider
    idp_roles: Mapped[str] = mapped_column(String(255), default="")

    def idp_roles_set(self) -> set[Role]:
        return {Role(r) for r in self.idp_roles.split() if r in Role.__members__}

    def __repr__(self) -> str:
        return f"<LoginSession {self.id_hash[:8]}… user={self.user_id} {self.method}>"
