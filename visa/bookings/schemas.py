"""What clients send about bookings, and what they are answered."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field

from visa.types import DbId, Input, Timestamp


class RequestBooking(Input):
    flavour: str = Field(min_length=1, max_length=64, description="A GPU size of the catalogue, by name")
    count: int = Field(1, ge=1, le=64, description="How many machines of that size")
    starts_on: date = Field(description="First day (UTC) the machines are needed")
    ends_on: date = Field(description="Last day (UTC), included")
    experiment_id: DbId | None = Field(None, description="The experiment whose beamtime it serves")
    proposal: str | None = Field(None, min_length=1, max_length=64,
                                 description="Or the proposal (its identifier) whose beamtimes it serves")
    comment: str = Field("", max_length=2000)


class DecideBooking(Input):
    response: str = Field("", max_length=2000, description="The reason, sent to the user (needed to refuse)")


class BookingQuery(BaseModel):
    scope: str = Field("mine", description="mine: one's own bookings; decide: those one decides on (all states)")


class BookingOut(BaseModel):
    id: int
    user: str
    user_full_name: str
    flavour: str
    cloud: str
    count: int
    starts_on: date
    ends_on: date
    experiment: str | None = Field(description="The experiment's identifier, when it serves one")
    proposal: str | None
    instrument: list[str]
    comment: str
    state: str
    response: str
    created_at: Timestamp
    handled_by: str | None
    handled_at: Timestamp | None
    instances: list[str] = Field(description="The machines made from it (uids)")
