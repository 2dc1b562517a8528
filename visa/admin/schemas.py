"""What the administration API takes and gives. Queries and answers that belong to a feature (instances,
users, the audit log, announcements, plans) live in that feature's schemas and are named here for the
admin handlers; catalogue input reuses the files' schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, StrictBool

from visa.announcements.schemas import NotificationIn, NotificationOut
from visa.audit.schemas import AuditOut, AuditQuery
from visa.catalogue.schemas import FlavourLimitsSpec, GpuSpec, LifetimeSpec, PlanIn, PlanPatch
from visa.instances.models import CommandAction
from visa.instances.schemas import (
    INSTANCE_SORTS,
    AttributeDefinitionIn,
    AttributeDefinitionOut,
    AttributeIn,
    AttributeOut,
    InstanceAttributesOut,
    InstanceOut,
    InstanceQuery,
    MemberAccessIn,
    MemberAccessMode,
    MemberAccessOut,
    MembersNeedOwner,
)
from visa.paging import Page, PageQuery
from visa.types import Input, Timestamp
from visa.users.models import USERNAME_PATTERN, Role
from visa.users.schemas import UserQuery
from visa.users.service import MAX_QUOTA

# --- instances --------------------------------------------------------------------------------




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
    attributes: list[AttributeOut]
    member_access: MemberAccessMode
    members_need_owner: MembersNeedOwner


class ActionIn(Input):
    action: Literal["start", "stop", "reboot", "delete"]

    @property
    def command(self) -> CommandAction:
        return CommandAction(self.action.upper())


class TerminationIn(Input):
    terminates_at: datetime = Field(description="New termination date (ISO 8601 with a time zone)")
    reason: str = Field("", max_length=500)


class UserDataOut(BaseModel):
    uid: str
    user_data: str = Field(description="cloud-init user-data as rendered now, secrets masked")


# --- users ------------------------------------------------------------------------------------


class PendingExtensionOut(BaseModel):
    """A request waiting for an answer, with what an administrator weighs it by."""

    id: int
    requested_until: Timestamp
    comment: str
    created_at: Timestamp
    instance_uid: str
    instance_name: str
    state: str
    owner: str
    owner_full_name: str
    flavour: str
    terminates_at: Timestamp
    last_activity_at: Timestamp
    last_interaction_at: Timestamp | None
    last_compute_at: Timestamp | None


class PoolOut(BaseModel):
    resource_class: str
    total: int
    used: int
    free: int


class GpuUserOut(BaseModel):
    instance_uid: str
    instance_name: str
    state: str
    owner: str
    flavour: str
    gpu_kind: str | None
    gpus: int
    created_at: Timestamp


class GpuPoolsOut(BaseModel):
    """One cloud's GPUs: the pools its capacity reports (Placement's GPU resource classes) and
    visa's machines that hold GPUs there; ``message`` when the capacity could not be read."""

    cloud: str
    kind: str
    pools: list[PoolOut]
    users: list[GpuUserOut]
    visa_gpus: int
    message: str | None


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
    uid_number: int | None
    gid_number: int | None
    extra_gids: list[int]
    home_path: str | None
    posix_source: str | None = Field(description="Which source set the unix identity: oidc, import, cli or admin")
    roles: list[GrantOut]
    created_at: Timestamp
    last_login_at: Timestamp | None


class GrantIn(Input):
    role: Role
    expires_at: datetime | None = Field(None, description="Required for GUEST; absent: no expiry")


class ScientistIn(Input):
    username: str = Field(pattern=USERNAME_PATTERN, description="The user who supports the instrument's users")


class ScientistOut(BaseModel):
    username: str
    full_name: str


class InstrumentOut(BaseModel):
    """An instrument and the scientists who see its users' machines on /support."""

    name: str
    scientists: list[ScientistOut]


class ActiveIn(Input):
    active: StrictBool = Field(description="false: the account is deactivated and logged out everywhere")


class PosixIn(Input):
    """A user's whole unix identity (absent or null: none); the ranges are checked by the service."""

    uid_number: int | None = Field(None, ge=0, le=2**31 - 2)
    gid_number: int | None = Field(None, ge=0, le=2**31 - 2)
    extra_gids: list[int] = Field(default_factory=list, max_length=64, description="Supplementary gids")
    home_path: str | None = Field(None, max_length=255, description="e.g. /home/alice")


class QuotaIn(Input):
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
    idle_warning_hours: int | None
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
    web_services: list[dict[str, Any]] = Field(default_factory=list, description="Declared web services: name, port")


class AdminPlanOut(BaseModel):
    id: int
    image: str
    flavour: str
    preset: bool
    enabled: bool
    image_visible: bool
    flavour_visible: bool


class LifetimesIn(Input):
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


class CloudIn(Input):
    kind: str = Field(description="Provider: local or openstack", max_length=32)
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Provider settings, as `visa clouds add --config`; secrets as {\"env\": \"VAR\"}. Its "
        "`provisioning` overrides get the site's [provisioning] checks (a bad or misspelt key: 400 naming it)",
    )


class CloudRegisteredOut(BaseModel):
    name: str
    kind: str
    enabled: bool


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


AdminInstanceOut.model_rebuild()
InstanceDetailOut.model_rebuild()


__all__ = [
    "INSTANCE_SORTS", "AttributeDefinitionIn", "AttributeDefinitionOut", "AttributeIn", "InstanceAttributesOut",
    "AuditOut", "AuditQuery", "InstanceQuery", "MemberAccessIn", "MemberAccessOut", "NotificationIn", "NotificationOut", "Page", "PageQuery", "PlanIn",
    "PlanPatch", "UserQuery",
]
