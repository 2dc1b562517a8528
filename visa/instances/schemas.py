"""Input for creating and changing instances (shared by the REST API, pages and CLI)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

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
    keyboard_layout: str = Field("en-us", pattern=r"^[a-z]{2,3}(-[a-z0-9]{1,12})?$")
    lifetime_hours: int | None = Field(None, ge=1, le=24 * 365, description="Shorter than the maximum, if wished")
    comments: str = Field("", max_length=2000)
