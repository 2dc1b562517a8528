"""The usage series as the API answers them."""

from __future__ import annotations

from datetime import datetime
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


Dimension = Literal["owner", "proposal", "instrument", "flavour", "cloud"]
DIMENSIONS: tuple[str, ...] = ("owner", "proposal", "instrument", "flavour", "cloud")


class UsageReportQuery(BaseModel):
    """A period, what to group by, and filters (each an exact name; combined with AND)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: datetime | None = Field(None, alias="from", description=(
        "Start of the period (ISO 8601; a date alone is midnight, a time without a zone is UTC); "
        "default: 30 days before `to`"))
    to: datetime | None = Field(None, description="End of the period (excluded); default and at most: now")
    by: Dimension = Field("proposal", description="What the rows are: owner, proposal, instrument, flavour or cloud")
    owner: str | None = Field(None, description="Only this owner's instances (username)")
    proposal: str | None = Field(None, description="Only the share of this proposal (identifier)")
    instrument: str | None = Field(None, description="Only the share of this instrument (name)")
    flavour: str | None = Field(None, description="Only instances of this flavour (name)")
    cloud: str | None = Field(None, description="Only instances on this cloud (name)")


class UsageRowOut(BaseModel):
    key: str | None = Field(description="The owner, proposal, instrument, flavour or cloud; null: none "
                                        "(an instance with no experiment, under proposal or instrument)")
    instances: int = Field(description="Instances that held resources in the period (in several rows when shared)")
    hours: float = Field(description="Instance-hours holding resources")
    core_hours: float
    memory_gb_hours: float
    gpu_hours: float


class UsageReportOut(BaseModel):
    start: Timestamp
    end: Timestamp
    by: str
    states: list[str] = Field(description="The states in which an instance counts (it holds its flavour's resources)")
    filters: dict[str, str]
    rows: list[UsageRowOut] = Field(description="Most core-hours first")
    total: UsageRowOut
