"""The catalogue as code: the shape of ``flavours/*.yaml`` and ``images/*.yaml`` entries."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from visa.catalogue.models import AutoAccept, Protocol
from visa.types import DbId, Input
from visa.users.models import GROUP_NAME_PATTERN, Role

NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"


def _instrument_names(value: list[str]) -> list[str]:
    for name in value:
        if not name or len(name) > 64:
            raise ValueError(f"instrument name {name!r} must be 1-64 characters")
    return value


InstrumentNames = Annotated[list[str], AfterValidator(_instrument_names)]


class GpuSpec(Input):
    kind: str = Field(min_length=1, max_length=64)
    count: int = Field(1, ge=1, le=16)


UserGroupName = Annotated[str, Field(pattern=GROUP_NAME_PATTERN, description="A user group's name")]


class FlavourLimitsSpec(Input):
    roles: list[Role] = Field(default_factory=list)
    groups: list[UserGroupName] = Field(default_factory=list, max_length=100,
                                        description="User groups whose members may use it")
    instruments: InstrumentNames = Field(default_factory=list)


class LifetimeSpec(Input):
    role: Role | None = Field(None, description="Role the rule applies to; absent (and no group): every user")
    group: UserGroupName | None = Field(None, description="User group the rule applies to, instead of a role")
    hours: int = Field(ge=1, le=24 * 365)

    @model_validator(mode="after")
    def _role_or_group(self) -> LifetimeSpec:
        if self.role is not None and self.group is not None:
            raise ValueError("a lifetime names a role or a group, not both")
        return self


class FlavourSpec(Input):
    name: str = Field(pattern=NAME)
    description: str = Field("", max_length=1000)
    cores: int = Field(ge=1, le=1024)
    memory_gb: float = Field(gt=0, le=8192)
    gpu: GpuSpec | None = None
    cloud: str | None = Field(None, max_length=64)
    cloud_flavour: str = Field(min_length=1, max_length=255)
    visible: bool = True
    limits: FlavourLimitsSpec = Field(default_factory=FlavourLimitsSpec)
    lifetimes: list[LifetimeSpec] = Field(default_factory=list)
    idle_warning_hours: int | None = Field(
        None, ge=1, le=24 * 365,
        description="Warn the owner once a machine of this size has been idle this long, and delete it "
        "lifetimes.inactivity_warning_hours later if still idle (scarce GPUs: sooner than the owner's "
        "inactivity limit); absent: the owner's limit alone",
    )

    @field_validator("memory_gb")
    @classmethod
    def _at_least_one_megabyte(cls, value: float) -> float:
        if round(value * 1024) < 1:  # stored in MB: less would become a flavour with no memory
            raise ValueError("must be at least 1 MB (0.001 GB)")
        return value

    @model_validator(mode="after")
    def _one_lifetime_per_role(self) -> FlavourSpec:
        roles = [lt.role for lt in self.lifetimes if lt.group is None]
        if len(roles) != len(set(roles)):
            raise ValueError("lifetimes: a role appears twice")
        groups = [lt.group for lt in self.lifetimes if lt.group is not None]
        if len(groups) != len(set(groups)):
            raise ValueError("lifetimes: a group appears twice")
        return self

    @property
    def memory_mb(self) -> int:
        return int(round(self.memory_gb * 1024))


# A security group's name as Neutron takes it (any printable text up to 255); visa keeps to a safe subset.
GROUP_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$"


class NetworkRuleSpec(Input):
    """Security groups a server gets while every condition given holds (an empty list: no condition).

    Within one condition any listed value will do; a rule with no condition applies to every server.
    """

    name: str = Field(pattern=NAME)
    description: str = Field("", max_length=1000)
    security_groups: list[str] = Field(min_length=1, max_length=32)
    cloud: str | None = Field(None, max_length=64, description="Only servers on this cloud; absent: every cloud")
    roles: list[Role] = Field(default_factory=list, description="The owner holds one of these roles")
    groups: list[UserGroupName] = Field(default_factory=list, max_length=100,
                                        description="The owner is in one of these user groups")
    flavours: list[str] = Field(default_factory=list, description="The server is of one of these flavours")
    instruments: InstrumentNames = Field(
        default_factory=list, description="One of the server's experiments is on one of these instruments"
    )
    beamtime: bool = Field(
        False, description="Only while one of those experiments (any of the server's, without instruments) runs"
    )

    @field_validator("security_groups")
    @classmethod
    def _group_names(cls, value: list[str]) -> list[str]:
        for i, name in enumerate(value):
            if not re.match(GROUP_NAME, name):
                raise ValueError(f"security group {name[:64]!r} (#{i + 1}): letters, digits and ._:- only, "
                                 "1-255 characters")
        if len(value) != len(set(value)):
            raise ValueError("a security group appears twice")
        return value

    @field_validator("flavours")
    @classmethod
    def _flavour_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.match(NAME, name):
                raise ValueError(f"flavour name {name[:64]!r} is not a catalogue name")
        return value


class ProtocolSpec(Input):
    protocol: Protocol
    port: int = Field(ge=1, le=65535)
    optional: bool = False


# A declared web service's name is part of a host name (``<uid>-<name>.<domain>``).
WEB_SERVICE_NAME = r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$"


class WebServiceSpec(Input):
    """A web application the machine serves on a port of its own, besides JupyterLab."""

    name: str = Field(pattern=WEB_SERVICE_NAME, description="a-z, 0-9 and '-' (not first nor last), 32 at most")
    port: int = Field(ge=1024, le=65535)


_CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$"


class WarmWindow(Input):
    """``count`` machines kept warm from ``from`` to ``to`` (the site's time zone, ``provisioning.timezone``;
    a window past midnight, 19:00-07:00, wraps)."""

    model_config = ConfigDict(populate_by_name=True)

    start: str = Field(alias="from", pattern=_CLOCK)
    end: str = Field(alias="to", pattern=_CLOCK)
    count: int = Field(ge=0, le=100)


class PlanSpec(Input):
    flavour: str = Field(pattern=NAME)
    preset: bool = False
    enabled: bool = True
    # Machines kept booted and unassigned for this plan: a number (all day), or windows of the day.
    warm: Annotated[int, Field(ge=0, le=100)] | list[WarmWindow] = 0

    def warm_windows(self) -> list[dict[str, Any]]:
        """As stored (``Plan.warm``): a list of {"from", "to", "count"}; none for 0."""
        if isinstance(self.warm, int):
            return [{"from": "00:00", "to": "24:00", "count": self.warm}] if self.warm else []
        return [{"from": w.start, "to": w.end, "count": w.count} for w in self.warm]


class ImageSpec(Input):
    name: str = Field(pattern=NAME)
    environment: str = Field(min_length=1, max_length=100)
    version: str = Field(min_length=1, max_length=32)
    description: str = Field("", max_length=2000)
    icon: str | None = Field(None, max_length=64)
    cloud: str | None = Field(None, max_length=64)
    cloud_image: str = Field(min_length=1, max_length=255)
    protocols: list[ProtocolSpec] = Field(min_length=1)
    visible: bool = True
    autoaccept_extension: AutoAccept = AutoAccept.NONE
    members_need_owner: bool = False
    plans: list[PlanSpec] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)
    web_services: list[WebServiceSpec] = Field(default_factory=list)

    @field_validator("web_services")
    @classmethod
    def _web_services_apart(cls, value: list[WebServiceSpec], info: ValidationInfo) -> list[WebServiceSpec]:
        """Each declared service its own name and port: none of another's nor of a protocol's."""
        taken_names = {p.value.lower() for p in Protocol}
        taken_ports = {p.port: p.protocol.value for p in info.data.get("protocols") or []}
        for web in value:
            if web.name in taken_names:
                raise ValueError(f"the name {web.name!r} is already a service of the image")
            if web.port in taken_ports:
                raise ValueError(f"port {web.port} of {web.name!r} is already {taken_ports[web.port]}'s")
            taken_names.add(web.name)
            taken_ports[web.port] = web.name
        return value

    @model_validator(mode="after")
    def _unique(self) -> ImageSpec:
        protocols = [p.protocol for p in self.protocols]
        if len(protocols) != len(set(protocols)):
            raise ValueError("protocols: a protocol appears twice")
        flavours = [p.flavour for p in self.plans]
        if len(flavours) != len(set(flavours)):
            raise ValueError("plans: a flavour appears twice")
        return self


# --- answers: the plans a user may pick --------------------------------------------------------


class PlanImageOut(BaseModel):
    name: str
    environment: str
    version: str
    description: str
    icon: str | None
    protocols: list[str]


class PlanFlavourOut(BaseModel):
    name: str
    description: str
    cores: int
    memory_mb: int
    gpu_kind: str | None
    gpu_count: int


class PlanOut(BaseModel):
    id: int
    preset: bool
    image: PlanImageOut
    flavour: PlanFlavourOut
    max_lifetime_hours: int


class FlavourCapacityOut(BaseModel):
    flavour: str
    cloud: str
    available: bool | None = Field(description="true: room now; false: none; null: the cloud cannot say")
    message: str
    needs: dict[str, int] = Field(description="What one machine takes, by Placement resource class")
    next_free: date | None = Field(
        None, description="When not available because of GPU bookings: the first day one of its machines can start")
    booked_until: date | None = Field(
        None, description="When a machine of it would come from the caller's own accepted GPU booking: the "
                          "booking's last day (the machine ends with it)")


class CapacityQuery(BaseModel):
    flavour: list[str] = Field(default_factory=list, description="Flavour names (repeatable); none: all visible")


class PlansQuery(BaseModel):
    experiment: list[DbId] = Field(default_factory=list, description="Experiment ids the machine is for")


# --- plans edited through the API ---------------------------------------------------------------


class PlanIn(Input):
    image: str = Field(pattern=NAME)
    flavour: str = Field(pattern=NAME)
    preset: bool = False
    enabled: bool = True


class PlanPatch(Input):
    preset: bool | None = None
    enabled: bool | None = None
