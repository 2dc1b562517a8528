"""The user office's export, as visa reads it (JSON or CSV), and experiments as the API shows them."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from visa.types import Timestamp
from visa.users.models import USERNAME_PATTERN

IDENT = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class MemberSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    username: str = Field(pattern=USERNAME_PATTERN)
    full_name: str = Field("", max_length=200)
    email: str | None = Field(None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    # The member's unix identity on the facility's storage (checked against the site's ranges
    # and other accounts when imported).
    uid_number: int | None = Field(None, ge=0, le=2**31 - 2)
    gid_number: int | None = Field(None, ge=0, le=2**31 - 2)
    extra_gids: list[int] = Field(default_factory=list, max_length=64)
    home_path: str | None = Field(None, max_length=255)


def _csv_member(text: str) -> dict[str, object]:
    """A CSV member: ``username[:uid[:gid[:gid+gid...[:home]]]]``."""
    parts = text.split(":")
    if len(parts) > 5:
        raise ValueError(f"member {text[:60]!r}: at most username:uid:gid:groups:home")
    member: dict[str, object] = {"username": parts[0]}
    for key, value in zip(("uid_number", "gid_number"), parts[1:3], strict=False):
        if value:
            member[key] = value
    if len(parts) > 3 and parts[3]:
        member["extra_gids"] = [g for g in parts[3].split("+") if g]
    if len(parts) > 4 and parts[4]:
        member["home_path"] = parts[4]
    return member


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str = Field(pattern=IDENT)
    proposal: str = Field(pattern=IDENT)
    proposal_title: str = Field("", max_length=2000)
    public_at: datetime | None = None
    instrument: str = Field(pattern=IDENT)
    start_date: date
    end_date: date
    title: str = Field("", max_length=2000)
    members: list[MemberSpec] = Field(default_factory=list, max_length=1000)

    @field_validator("members", mode="before")
    @classmethod
    def _usernames(cls, value: object) -> object:
        if isinstance(value, str):  # CSV: "alice;bob" or "alice:23456:23456;bob"
            return [_csv_member(v) for v in (p.strip() for p in value.split(";")) if v]
        if isinstance(value, list):
            return [{"username": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("public_at", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("public_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            from datetime import UTC

            value = value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _dates(self) -> ExperimentSpec:
        if self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        return self


class ExperimentOut(BaseModel):
    """An experiment as ``GET /api/experiments`` and the open-data search show it (never its members)."""

    id: int
    external_id: str
    title: str | None
    proposal: str
    proposal_title: str | None
    instrument: str
    start_date: str
    end_date: str
    open_data: bool
    public_at: Timestamp | None = Field(description="When the proposal's embargo ends (or ended)")


class OpenDataQuery(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    q: str = Field("", max_length=100, description="Part of a proposal, an experiment id, a title or an instrument")
    instrument: str | None = Field(None, pattern=IDENT, description="Instrument name, exactly")
    limit: int = Field(20, ge=1, le=50, description="How many, newest open data first")
