"""Instances (the users' machines), their members, commands and extension requests."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    case,
    event,
    false,
    insert,
    inspect,
    literal,
    text,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, Mapper, mapped_column, relationship, validates

from visa.db import Base, UTCDateTime
from visa.errors import without_host_paths
from visa.states import InstanceState
from visa.types import JsonDict, enum_column

if TYPE_CHECKING:
    from visa.catalogue.models import Plan
    from visa.clouds.models import Cloud
    from visa.experiments.models import Experiment
    from visa.users.models import User


# States that change on their own soon: synced more often.
UNSTABLE_STATES = frozenset(
    {
        InstanceState.BUILDING,
        InstanceState.STARTING,
        InstanceState.PARTIALLY_ACTIVE,
        InstanceState.STOPPING,
        InstanceState.REBOOTING,
        InstanceState.MIGRATING,
        InstanceState.ACTIVE_MIGRATING,
        InstanceState.DELETING,
        InstanceState.UNKNOWN,
    }
)


class MemberRole(enum.StrEnum):
    OWNER = "OWNER"
    USER = "USER"
    GUEST = "GUEST"
    SUPPORT = "SUPPORT"


class InstanceHome(enum.StrEnum):
    """The home an instance's machine runs with, fixed when it is created.

    OWN: a home of its own (asked for at create, or the cloud keeps no home across machines).
    SHARED: the owner's home, shared by all their machines; people other than the owner never
    act in it (a USER or SUPPORT member would act as the owner, and what they leave there would
    run in the owner's other machines): they may only watch.
    OPEN: the owner's shared home, where the facility lets members act anyway
    (``sharing.shared_instance_home = "shared"``)."""

    OWN = "own"
    SHARED = "shared"
    OPEN = "open"


class CommandAction(enum.StrEnum):
    CREATE = "CREATE"
    START = "START"
    STOP = "STOP"
    REBOOT = "REBOOT"
    DELETE = "DELETE"


class CommandState(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"


class ExtensionState(enum.StrEnum):
    PENDING = "PENDING"
    ACCEPTED = "ACCEPTED"
    REFUSED = "REFUSED"


instance_experiments = Table(
    "instance_experiments",
    Base.metadata,
    Column("instance_id", ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True),
    Column("experiment_id", ForeignKey("experiments.id", ondelete="RESTRICT"), primary_key=True, index=True),
)

# Others' experiments whose embargo had ended, asked for at creation: raw data mounted read-only.
instance_open_data = Table(
    "instance_open_data",
    Base.metadata,
    Column("instance_id", ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True),
    Column("experiment_id", ForeignKey("experiments.id", ondelete="RESTRICT"), primary_key=True, index=True),
)


class Instance(Base):
    __tablename__ = "instances"
    # The instances not deleted, by state: the admin list counts from it alone (an index-only
    # scan), filtered by state or not, and the scheduler's "what moves" reads it.
    __table_args__ = (
        Index("ix_instances_live_state", "state", postgresql_where=text("deleted_at IS NULL"),
              sqlite_where=text("deleted_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uid: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    comments: Mapped[str] = mapped_column(Text, default="")
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id", ondelete="RESTRICT"), index=True)
    cloud_id: Mapped[int] = mapped_column(ForeignKey("clouds.id", ondelete="RESTRICT"), index=True)
    cloud_server_id: Mapped[str | None] = mapped_column(String(255), index=True)
    address: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[InstanceState] = mapped_column(enum_column(InstanceState), index=True)
    error_message: Mapped[str | None] = mapped_column(Text)
    screen_width: Mapped[int] = mapped_column(Integer, default=1280)
    screen_height: Mapped[int] = mapped_column(Integer, default=800)
    keyboard_layout: Mapped[str] = mapped_column(String(32), default="en-us")
    # The per-instance desktop secret (VNC password); never logged nor sent to another user.
    secret: Mapped[str] = mapped_column(String(64))
    provider_state: Mapped[dict[str, Any]] = mapped_column(JsonDict, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)  # the admin list's default order
    terminates_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # The end of the booking the machine was made from (visa.bookings): it never lives past it.
    booked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_interaction_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_compute_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lifetime_warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    inactivity_warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    state_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)

    owner: Mapped[User] = relationship(lazy="joined")
    plan: Mapped[Plan] = relationship(lazy="joined")
    cloud: Mapped[Cloud] = relationship(lazy="joined")
    experiments: Mapped[list[Experiment]] = relationship(secondary=instance_experiments, lazy="selectin")
    open_data_experiments: Mapped[list[Experiment]] = relationship(secondary=instance_open_data, lazy="selectin")
    members: Mapped[list[InstanceMember]] = relationship(
        back_populates="instance", cascade="all, delete-orphan", lazy="selectin"
    )
    # None: the image decides whether members other than the owner need the owner connected
    # (``Image.members_need_owner``); True lets them in alone, False never does (VISA's
    # unrestricted member access, set by the owner or an administrator).
    unrestricted_member_access: Mapped[bool | None] = mapped_column(Boolean, default=None)
    # The owner's policy: whether the desktop's clipboard reaches view-only members (GUESTs) too.
    clipboard_to_viewers: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    home: Mapped[InstanceHome] = mapped_column(enum_column(InstanceHome, length=8), default=InstanceHome.SHARED,
                                               server_default=InstanceHome.SHARED.value)
    # Key/value pairs administrators set (``AttributeDefinition``); loaded when read.
    attributes: Mapped[list[InstanceAttribute]] = relationship(
        cascade="all, delete-orphan", lazy="select", passive_deletes=True,
    )
    # Loaded when a rule asks (the owner-presence rule), not with every instance.
    connections: Mapped[list[InstanceConnection]] = relationship(
        back_populates="instance", cascade="all, delete-orphan", lazy="select", passive_deletes=True,
    )

    @validates("error_message")
    def _public_error(self, _key: str, value: str | None) -> str | None:
        # Shown to the owner and members: cloud and session faults name host paths, which stay in the log.
        return without_host_paths(value)[:2000] if value else value

    def last_activity_at(self, untouched_tab_hours: float) -> datetime:
        """The latest of the last input (else the creation), the last computation, and the last time a tab
        showed it, a tab counting for ``untouched_tab_hours`` after the last input at most (the rule of
        ``visa.instances.lifecycle.no_activity_since``, for one instance)."""
        interaction = self.last_interaction_at or self.created_at
        seen = None
        if self.last_seen_at is not None:
            seen = min(self.last_seen_at, interaction + timedelta(hours=untouched_tab_hours))
        return max(t for t in (interaction, self.last_compute_at, seen) if t is not None)

    @property
    def members_need_owner(self) -> bool:
        """Whether members other than the owner may connect only while the owner is connected."""
        if self.unrestricted_member_access is not None:
            return not self.unrestricted_member_access
        return bool(self.plan.image.members_need_owner)

    @property
    def members_may_act(self) -> bool:
        """Whether members other than the owner may type, and move files, in this machine."""
        return self.home != InstanceHome.SHARED

    def owner_connected(self, now: datetime) -> bool:
        """Whether the owner has a desktop or JupyterLab open now (a live gateway connection)."""
        return any(c.user_id == self.owner_id and c.expires_at > now for c in self.connections)

    def __repr__(self) -> str:
        return f"<Instance {self.uid} {self.state}>"


class InstanceMember(Base):
    __tablename__ = "instance_members"
    __table_args__ = (UniqueConstraint("instance_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[MemberRole] = mapped_column(enum_column(MemberRole))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    instance: Mapped[Instance] = relationship(back_populates="members")
    user: Mapped[User] = relationship(lazy="joined")


class AttributeDefinition(Base):
    """A key administrators may set on instances (``InstanceAttribute``), with its label."""

    __tablename__ = "attribute_definitions"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"<AttributeDefinition {self.key}>"


class InstanceAttribute(Base):
    """One defined attribute's value on one instance."""

    __tablename__ = "instance_attributes"

    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True)
    definition_id: Mapped[int] = mapped_column(ForeignKey("attribute_definitions.id", ondelete="CASCADE"),
                                               primary_key=True, index=True)
    value: Mapped[str] = mapped_column(String(255))

    definition: Mapped[AttributeDefinition] = relationship(lazy="joined")

    def __repr__(self) -> str:
        return f"<InstanceAttribute instance={self.instance_id} {self.definition_id}>"


class InstanceCommand(Base):
    """Who asked for what on an instance, and how it ended."""

    __tablename__ = "instance_commands"

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[CommandAction] = mapped_column(enum_column(CommandAction))
    state: Mapped[CommandState] = mapped_column(enum_column(CommandState), index=True)
    message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When a process took it: a RUNNING command claimed long ago belongs to a process that died.
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Which process runs it, and when that process last said it still does (visa.commands.executor):
    # a RUNNING command whose heartbeat stopped belongs to a process that died.
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @validates("message")
    def _public_message(self, _key: str, value: str | None) -> str | None:
        return without_host_paths(value)[:2000] if value else value


class ExtensionRequest(Base):
    """A request for a longer lifetime."""

    __tablename__ = "extension_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    requester_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    requested_until: Mapped[datetime] = mapped_column(UTCDateTime)
    comment: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[ExtensionState] = mapped_column(enum_column(ExtensionState), index=True)
    handled_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    handled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    granted_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    response: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ConnectToken(Base):
    """A one-time desktop/Jupyter connect token; only its hash is kept."""

    __tablename__ = "connect_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[MemberRole] = mapped_column(enum_column(MemberRole))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class InstanceThumbnail(Base):
    __tablename__ = "instance_thumbnails"

    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True)
    image: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WarmState(enum.StrEnum):
    BOOTING = "BOOTING"  # asked of the cloud, not yet checked
    READY = "READY"  # booted, its helper answered: a create may take it
    TAKEN = "TAKEN"  # a create took it; its owner is being given (then the row goes)


class WarmMachine(Base):
    """A machine of a plan booted before anyone asked, with nothing of anyone's on it. A create
    that matches takes it once (READY -> TAKEN, one conditional UPDATE): the instance gets its
    uid, server, address and desktop secret, and the row goes once the owner is given. Its uid
    is the future instance's: the host key visa derives from it is already the machine's."""

    __tablename__ = "warm_machines"

    id: Mapped[int] = mapped_column(primary_key=True)
    uid: Mapped[str] = mapped_column(String(16), unique=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id", ondelete="RESTRICT"), index=True)
    cloud_id: Mapped[int] = mapped_column(ForeignKey("clouds.id", ondelete="RESTRICT"), index=True)
    cloud_server_id: Mapped[str | None] = mapped_column(String(255))
    address: Mapped[str | None] = mapped_column(String(255))
    provider_state: Mapped[dict[str, Any]] = mapped_column(JsonDict, default=dict)
    secret: Mapped[str] = mapped_column(String(64))  # the desktop secret, the instance's once taken
    state: Mapped[WarmState] = mapped_column(enum_column(WarmState, length=16), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    taken_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    instance_id: Mapped[int | None] = mapped_column(ForeignKey("instances.id", ondelete="SET NULL"), unique=True)

    plan: Mapped[Plan] = relationship(lazy="joined")
    cloud: Mapped[Cloud] = relationship(lazy="joined")

    def __repr__(self) -> str:
        return f"<WarmMachine {self.uid} {self.state}>"


class ConnectionProtocol(enum.StrEnum):
    DESKTOP = "DESKTOP"
    JUPYTER = "JUPYTER"


class InstanceConnection(Base):
    """Someone connected to an instance now, through a gateway process: written when a desktop
    or JupyterLab websocket opens, deleted when it closes, its ``expires_at`` pushed forward by
    the gateway's heartbeat, so that the rows of a gateway that died expire by themselves."""

    __tablename__ = "instance_connections"

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    protocol: Mapped[ConnectionProtocol] = mapped_column(enum_column(ConnectionProtocol))
    role: Mapped[MemberRole] = mapped_column(enum_column(MemberRole))
    gateway: Mapped[str] = mapped_column(String(128))  # host:pid of the process holding it, for operators
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)

    instance: Mapped[Instance] = relationship(back_populates="connections")
    user: Mapped[User] = relationship(lazy="joined")

    def __repr__(self) -> str:
        return f"<InstanceConnection {self.protocol} user={self.user_id} instance={self.instance_id}>"




class InstanceStatePeriod(Base):
    """One stretch of an instance's life in one state: the history usage is accounted from.

    Written by the mapper hooks below whenever an instance's state is stored (created, or
    changed by any code path that sets ``Instance.state``), from ``state_changed_at``: the
    open period of an instance (``ended_at`` NULL) is closed and the new one opened in the same
    flush. DELETED opens no period. Instances older than the table have one period, from their
    state when it was made (the migration)."""

    __tablename__ = "instance_state_periods"
    __table_args__ = (
        # At most one open period per instance, found at once when it closes.
        Index("ix_instance_state_periods_open", "instance_id", unique=True,
              postgresql_where=text("ended_at IS NULL"), sqlite_where=text("ended_at IS NULL")),
        # The usage report sums each instance's periods: read in the instance's order from the
        # index alone (no sort, no visit of the table), as are an instance's periods.
        Index("ix_instance_state_periods_instance", "instance_id", "started_at", "ended_at", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    state: Mapped[InstanceState] = mapped_column(enum_column(InstanceState))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"<InstanceStatePeriod {self.instance_id} {self.state} {self.started_at:%Y-%m-%d %H:%M}>"


def _open_period(connection: Connection, instance: Instance, close: bool) -> None:
    at = instance.state_changed_at or instance.created_at
    period = InstanceStatePeriod
    if close:
        # Never before it began (another process's clock a little behind): no negative hours.
        ended = case((period.started_at > at, period.started_at), else_=literal(at, UTCDateTime()))
        connection.execute(update(period).where(period.instance_id == instance.id, period.ended_at.is_(None))
                           .values(ended_at=ended))
    if instance.state != InstanceState.DELETED:
        connection.execute(insert(period).values(instance_id=instance.id, state=instance.state, started_at=at))


@event.listens_for(Instance, "after_insert")
def _first_period(_mapper: Mapper[Instance], connection: Connection, instance: Instance) -> None:
    _open_period(connection, instance, close=False)


@event.listens_for(Instance, "after_update")
def _next_period(_mapper: Mapper[Instance], connection: Connection, instance: Instance) -> None:
    # The state set without being read first has no old value here: a new period all the same.
    history = inspect(instance).attrs.state.history
    if history.added and (not history.deleted or history.added[0] != history.deleted[0]):
        _open_period(connection, instance, close=True)
