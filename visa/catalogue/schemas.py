"""The catalogue as code: the shape of ``flavours/*.yaml`` and ``images/*.yaml`` entries."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from visa.catalogue.models import AutoAccept, Protocol
from visa.types import DbId
from visa.users.models import Role

NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class GpuSpec(_Strict):
    kind: str = Field(min_length=1, max_length=64)
    count: int = Field(1, ge=1, le=16)


class FlavourLimitsSpec(_Strict):
    roles: list[Role] = Field(default_factory=list)
    instruments: list[str] = Field(default_factory=list)

    @field_validator("instruments")
    @classmethod
    def _instrument_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or len(name) > 64:
                raise ValueError(f"instrument name {name!r} must be 1-64 characters")
        return value


class LifetimeSpec(_Strict):
    role: Role | None = Field(None, description="Role the rule applies to; absent: every user")
    hours: int = Field(ge=1, le=24 * 365)


class FlavourSpec(_Strict):
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

    @field_validator("memory_gb")
    @classmethod
    def _at_least_one_megabyte(cls, value: float) -> float:
        if round(value * 1024) < 1:  # stored in MB: less would become a flavour with no memory
            raise ValueError("must be at least 1 MB (0.001 GB)")
        return value

    @model_validator(mode="after")
    def _one_lifetime_per_role(self) -> FlavourSpec:
        roles = [lt.role for lt in self.lifetimes]
        if len(roles) != len(set(roles)):
            raise ValueError("lifetimes: a role appears twice")
        return self

    @property
    def memory_mb(self) -> int:
        return int(round(self.memory_gb * 1024))


class ProtocolSpec(_Strict):
    protocol: Protocol
    port: int = Field(ge=1, le=65535)
    optional: bool = False


class PlanSpec(_Strict):
    flavour: str = Field(pattern=NAME)
    preset: bool = False
    enabled: bool = True


class ImageSpec(_Strict):
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


class CapacityQuery(BaseModel):
    flavour: list[str] = Field(default_factory=list, description="Flavour names (repeatable); none: all visible")


class PlansQuery(BaseModel):
    experiment: list[DbId] = Field(default_factory=list, description="Experiment ids the machine is for")


# --- plans edited through the API ---------------------------------------------------------------


class PlanIn(_Strict):
    image: str = Field(pattern=NAME)
    flavour: str = Field(pattern=NAME)
    preset: bool = False
    enabled: bool = True


class PlanPatch(_Strict):
    preset: bool | None = None
    enabled: bool | None = None
