"""The user office's export, as visa reads it (JSON or CSV), and experiments as the API shows them."""

from __future__ import annotations

import re
from datetime import date, datetime
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from visa.types import Input, Timestamp
from visa.users.models import USERNAME_PATTERN

IDENT = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# A DOI as registries hand them out: "10.", a registrant code, "/", a suffix of printable characters.
DOI = re.compile(r"10\.\d{4,9}(\.\d+)*/[\x21-\x7e]+")


def web_url(value: str) -> str:
    """``value`` if it is an absolute http(s) URL with a host and nothing a link could misread
    (spaces, control characters, credentials); a ValueError saying why otherwise."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("a URL has no spaces or control characters")
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("a URL with a user name or password is refused")
    return value


class MemberSpec(Input):
    username: str = Field(pattern=USERNAME_PATTERN)
    full_name: str = Field("", max_length=200)
    email: str | None = Field(None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    # The person's subject (``sub``) at the facility's identity provider: their first login there
    # opens this account rather than a new one (visa never matches logins by name).
    subject: str | None = Field(None, min_length=1, max_length=255)
    # The member's unix identity on the facility's storage (checked against the site's ranges
    # and other accounts when imported).
    uid_number: int | None = Field(None, ge=0, le=2**31 - 2)
    gid_number: int | None = Field(None, ge=0, le=2**31 - 2)
    extra_gids: list[int] = Field(default_factory=list, max_length=64)
    home_path: str | None = Field(None, max_length=255)


class ScientistSpec(Input):
    """An instrument scientist: created as a user when visa does not know them yet."""

    username: str = Field(pattern=USERNAME_PATTERN)
    full_name: str = Field("", max_length=200)
    email: str | None = Field(None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    subject: str | None = Field(None, min_length=1, max_length=255)  # as MemberSpec's


def _people(value: object) -> object:
    """A list of people: usernames or objects; CSV's ``"carol;dave"`` too."""
    if isinstance(value, str):
        value = [v for v in (p.strip() for p in value.split(";")) if v]
    if isinstance(value, list):
        return [{"username": v} if isinstance(v, str) else v for v in value]
    return value


class InstrumentSpec(Input):
    """An instrument and its scientists, exactly: who is not listed is no longer one of them."""

    name: str = Field(pattern=IDENT)
    scientists: list[ScientistSpec] = Field(default_factory=list, max_length=1000)

    @field_validator("scientists", mode="before")
    @classmethod
    def _scientists(cls, value: object) -> object:
        return _people(value)


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


class ExperimentSpec(Input):
    id: str = Field(pattern=IDENT)
    proposal: str = Field(pattern=IDENT)
    proposal_title: str = Field("", max_length=2000)
    public_at: datetime | None = None
    instrument: str = Field(pattern=IDENT)
    start_date: date
    end_date: date
    title: str = Field("", max_length=2000)
    members: list[MemberSpec] = Field(default_factory=list, max_length=1000)
    # A DOI (10.<registrant>/<suffix>; a https://doi.org/ or doi: prefix is taken off), the data
    # portal's and the e-logbook's pages (http or https): shown as links to the experiment's members.
    doi: str | None = Field(None, max_length=255)
    data_url: str | None = Field(None, max_length=2000)
    logbook_url: str | None = Field(None, max_length=2000)
    # The scientists of this experiment's instrument (CSV's column); None: the entry says nothing of them.
    instrument_scientists: list[ScientistSpec] | None = Field(None, max_length=1000)

    @field_validator("instrument_scientists", mode="before")
    @classmethod
    def _scientists(cls, value: object) -> object:
        return _people(value)

    @field_validator("members", mode="before")
    @classmethod
    def _usernames(cls, value: object) -> object:
        if isinstance(value, str):  # CSV: "alice;bob" or "alice:23456:23456;bob"
            return [_csv_member(v) for v in (p.strip() for p in value.split(";")) if v]
        if isinstance(value, list):
            return [{"username": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("public_at", "doi", "data_url", "logbook_url", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        if isinstance(value, str) and value.strip() == "":
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("doi")
    @classmethod
    def _doi(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for prefix in ("https://doi.org/", "http://doi.org/", "https://dx.doi.org/", "doi:"):
            if value.lower().startswith(prefix):
                value = value[len(prefix):]
                break
        if not DOI.fullmatch(value):
            raise ValueError("not a DOI (10.<registrant>/<suffix>, e.g. 10.15151/ESRF-ES-513711297)")
        return value

    @field_validator("data_url", "logbook_url")
    @classmethod
    def _web_url(cls, value: str | None) -> str | None:
        return None if value is None else web_url(value)

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
    doi: str | None = Field(None, description="The data's DOI, for papers to cite")
    data_url: str | None = Field(None, description="The data portal's page of the experiment")
    logbook_url: str | None = Field(None, description="The experiment's electronic logbook")


class OpenDataQuery(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    q: str = Field("", max_length=100, description="Part of a proposal, an experiment id, a title or an instrument")
    instrument: str | None = Field(None, pattern=IDENT, description="Instrument name, exactly")
    limit: int = Field(20, ge=1, le=50, description="How many, newest open data first")
