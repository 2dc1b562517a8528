"""What the administration API takes and gives. Catalogue input reuses the files' schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from visa.announcements.models import NotificationKind, NotificationLevel
from visa.catalogue.schemas import NAME, FlavourLimitsSpec, GpuSpec, LifetimeSpec
from visa.instances.models import CommandAction, InstanceState
from visa.instances.schemas import InstanceOut
from visa.types import Timestamp
from visa.users.models import Role
from visa.users.service import MAX_QUOTA

T = TypeVar("T")

MAX_PER_PAGE = 200


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PageQuery(_In):
    page: int = Field(1, ge=1, le=100_000)
    per_page: int = Field(50, ge=1, le=MAX_PER_PAGE)


class Page(BaseModel, Generic[T]):  # noqa: UP046 (Python 3.11)
    items: list[T]
    total: int
    page: int
    per_page: int


# --- instances --------------------------------------------------------------------------------

INSTANCE_SORTS = ("created_at", "terminates_at", "state_changed_at", "last_seen_at", "name", "state", "owner")
InstanceSort = Literal[
    "created_at", "-created_at", "terminates_at", "-terminates_at", "state_changed_at", "-state_changed_at",
    "last_seen_at", "-last_seen_at", "name", "-name", "state", "-state", "owner", "-owner",
]


class InstanceQuery(PageQuery):
    state: list[InstanceState] = Field(default_factory=list, description="Any of these states")
    owner: str | None = Field(None, max_length=64, description="Owner's username")
    image: str | None = Field(None, max_length=64, description="Image name")
    flavour: str | None = Field(None, max_length=64, description="Flavour name")
    cloud: str | None = Field(None, max_length=64, description="Cloud name")
    q: str | None = Field(None, max_length=100, description="Part of the name or uid")
    deleted: bool = Field(False, description="Include deleted instances")
    sort: InstanceSort = "-created_at"


class AdminInstanceOut(InstanceOut):
    state_changed_at: Timestamp | None
    deleted_at: Timestamp | None
    cloud_server_id: str | None
    address: str | None
    members: list[MemberOut]


class MemberOut(BaseModel):
    username: str
    full_name: str
    role: str


class CommandOut(BaseModel):
    id: int
    action: str
    state: str
    actor: str | None
    message: str | None
    created_at: Timestamp
    finished_at: Timestamp | None


class AuditOut(BaseModel):
    id: int
    at: Timestamp
    actor: str
    action: str
    target_type: str | None
    target_id: str | None
    details: dict[str, Any]
    ip: str | None


class ExperimentDetail(BaseModel):
    id: int
    external_id: str
    proposal: str
    title: str | None
    instrument: str
    start_date: str
    end_date: str


class InstanceDetailOut(AdminInstanceOut):
    experiments_detail: list[ExperimentDetail]
    commands: list[CommandOut]
    history: list[AuditOut]
    last_interaction_at: Timestamp | None
    owner_email: str | None


class ActionIn(_In):
    action: Literal["start", "stop", "reboot", "delete"]

    @property
    def command(self) -> CommandAction:
        return CommandAction(self.action.upper())


class TerminationIn(_In):
    terminates_at: datetime = Field(description="New termination date (ISO 8601 with a time zone)")
    reason: str = Field("", max_length=500)


class UserDataOut(BaseModel):
    uid: str
    user_data: str = Field(description="cloud-init user-data as rendered now, secrets masked")


# --- users ------------------------------------------------------------------------------------


class UserQuery(PageQuery):
    q: str | None = Field(None, max_length=100, description="Part of the username, name or email")
    role: Role | None = None


class GrantOut(BaseModel):
    role: Role
    expires_at: Timestamp | None
    granted_at: Timestamp


class AdminUserOut(BaseModel):
    id: int
    username: str
    full_name: str
    email: str | None
    active: bool
    instance_quota: int
    instances: int
    roles: list[GrantOut]
    created_at: Timestamp
    last_login_at: Timestamp | None


class GrantIn(_In):
    role: Role
    expires_at: datetime | None = Field(None, description="Required for GUEST; absent: no expiry")


class ActiveIn(_In):
    active: StrictBool = Field(description="false: the account is deactivated and logged out everywhere")


class QuotaIn(_In):
    quota: int = Field(ge=-1, le=MAX_QUOTA, description="Instances; -1 = unlimited")


# --- catalogue --------------------------------------------------------------------------------


class FlavourOut(BaseModel):
    id: int
    name: str
    description: str
    cores: int
    memory_mb: int
    gpu: GpuSpec | None
    cloud: str | None
    cloud_flavour: str
    visible: bool
    limits: FlavourLimitsSpec
    lifetimes: list[LifetimeSpec]
    instances: int


class ProtocolOut(BaseModel):
    protocol: str
    port: int
    optional: bool


class ImageOut(BaseModel):
    id: int
    name: str
    environment: str
    version: str
    description: str
    icon: str | None
    cloud: str | None
    cloud_image: str
    visible: bool
    autoaccept_extension: str
    protocols: list[ProtocolOut]
    options: dict[str, Any]


class AdminPlanOut(BaseModel):
    id: int
    image: str
    flavour: str
    preset: bool
    enabled: bool
    image_visible: bool
    flavour_visible: bool


class PlanIn(_In):
    image: str = Field(pattern=NAME)
    flavour: str = Field(pattern=NAME)
    preset: bool = False
    enabled: bool = True


class PlanPatch(_In):
    preset: bool | None = None
    enabled: bool | None = None


class LifetimesIn(_In):
    lifetimes: list[LifetimeSpec] = Field(max_length=20)


# --- clouds and dashboard ---------------------------------------------------------------------


class CloudUsage(BaseModel):
    """Quota from the cloud (None where it does not say) and use from visa's own instances."""

    max_instances: int | None
    max_cores: int | None
    max_memory_mb: int | None
    cloud_used_instances: int | None
    cloud_used_cores: int | None
    cloud_used_memory_mb: int | None
    instances: int
    cores: int
    memory_mb: int
    gpus: int


class CloudOut(BaseModel):
    name: str
    kind: str
    enabled: bool
    status: Literal["ok", "unavailable", "disabled"]
    message: str | None
    isolated: bool | None = Field(None, description="Sessions on visa's own machine: fully isolated or not")
    isolation: str | None = Field(None, description="How they are isolated, or why not")
    usage: CloudUsage


class StatsOut(BaseModel):
    instances: int
    by_state: dict[str, int]
    by_image: dict[str, int]
    by_flavour: dict[str, int]
    by_cloud: dict[str, int]
    active_sessions: int = Field(description="Instances with desktop or Jupyter activity in the last 5 minutes")
    users: int
    pending_extensions: int
    clouds: list[CloudOut]


# --- notifications and audit ------------------------------------------------------------------


class NotificationIn(_In):
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


class AuditQuery(PageQuery):
    action: str | None = Field(None, max_length=64, description="Exact action, or a prefix ending in '.'")
    actor: str | None = Field(None, max_length=64)
    target_type: str | None = Field(None, max_length=32)
    target_id: str | None = Field(None, max_length=64)
    since: datetime | None = None
    until: datetime | None = None


AdminInstanceOut.model_rebuild()
InstanceDetailOut.model_rebuild()
