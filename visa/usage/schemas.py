"""The usage series as the API answers them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from visa.types import Timestamp


class UsageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    span: Literal["day", "week", "month"] = "day"


class UsageSeriesOut(BaseModel):
    span: str
    start: Timestamp
    end: Timestamp
    step_seconds: int
    times: list[int] = Field(description="Epoch seconds of each point")
    totals: dict[str, list[float | None]] = Field(
        description="instances, active_sessions, cores, memory_mb, gpus: one value per point (null: no sample)"
    )
    by_flavour: dict[str, dict[str, list[float | None]]] = Field(description='"cloud/flavour" -> the same metrics')
