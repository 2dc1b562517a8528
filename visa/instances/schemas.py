"""Input for creating and changing instances (shared by the REST API, pages and CLI)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from visa.provisioning.names import KEYBOARD_NAMES
from visa.types import DbId


class CreateInstance(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100)
    plan_id: DbId
    experiment_ids: list[DbId] = Field(default_factory=list, max_length=50)
    open_data_ids: list[DbId] = Field(
        default_factory=list, max_length=20,
        description="Experiments whose embargo has ended, of any proposal: raw data mounted read-only",
    )
    screen_width: int = Field(1280, ge=640, le=7680)
    screen_height: int = Field(800, ge=480, le=4320)
    keyboard_layout: str = Field("en-us", max_length=32, description="One of the layouts the create page offers")
    lifetime_hours: int | None = Field(None, ge=1, le=24 * 365, description="Shorter than the maximum, if wished")
    comments: str = Field("", max_length=2000)

    @field_validator("keyboard_layout")
    @classmethod
    def _offered_layout(cls, value: str) -> str:
        if value not in KEYBOARD_NAMES:
            raise ValueError(f"unknown keyboard layout; one of {', '.join(sorted(KEYBOARD_NAMES))}")
        return value


class NewMember(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    role: Literal["USER", "GUEST"] = "USER"


class RoleChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["USER", "GUEST"]


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("give a timezone (e.g. 2026-02-01T12:00:00Z)")
    return value


class RequestExtension(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    requested_until: datetime = Field(validation_alias=AliasChoices("requested_until", "until"))
    comment: str = Field("", max_length=2000)

    @field_validator("requested_until")
    @classmethod
    def _tz(cls, value: datetime) -> datetime:
        return _aware(value)


class HandleExtension(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    granted_until: datetime | None = Field(
        None, validation_alias=AliasChoices("granted_until", "until"),
        description="Accept until this date (default: the date asked for)",
    )
    response: str = Field("", max_length=2000)

    @field_validator("granted_until")
    @classmethod
    def _tz(cls, value: datetime | None) -> datetime | None:
        return _aware(value) if value is not None else None
