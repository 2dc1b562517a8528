"""Sharing in and out: members, invitation links, who is connected, and support requests."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from visa.types import Input, Timestamp


class NewMember(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    role: Literal["USER", "GUEST"] = "USER"


class RoleChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["USER", "GUEST"]


class MemberOut(BaseModel):
    username: str
    full_name: str
    role: str
    since: Timestamp


class SupportOut(BaseModel):
    status: Literal["pending", "joined", "approved", "denied"]
    message: str | None = None
    member: MemberOut | None = None
    # Pending: when the owner's prompt times out (asking again then joins, unless the owner is staff).
    prompt_until: Timestamp | None = None


class PendingSupportOut(BaseModel):
    username: str
    requested_at: Timestamp


class ConnectedOut(BaseModel):
    username: str
    full_name: str
    role: str
    protocols: list[Literal["DESKTOP", "JUPYTER"]]
    since: Timestamp


class PresenceEvent(BaseModel):
    """Who is connected to an instance now (the ``presence`` event and ``GET .../presence``)."""

    uid: str
    connected: list[ConnectedOut] = Field(default_factory=list)
    owner_connected: bool = False
    # Members other than the owner may not connect now: the rule applies and the owner is away.
    waiting_for_owner: bool = False


class NewInvitation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["USER", "GUEST"] = "USER"
    hours: int = Field(48, ge=1, le=24 * 14, description="How long the link may be used")


class InvitationOut(BaseModel):
    id: int
    role: str
    created_at: Timestamp
    expires_at: Timestamp
    used_at: Timestamp | None = None
    used_by: str | None = None
    url: str | None = Field(None, description="The link itself: in the answer that creates it only")


class NewViewLink(Input):
    label: str = Field(min_length=1, max_length=100, description="What the link is for (a talk, a colleague's name)")
    hours: int = Field(4, ge=1, le=72, description="How long the link opens the desktop")


class ViewLinkOut(BaseModel):
    id: int
    label: str
    created_at: Timestamp
    expires_at: Timestamp
    revoked_at: Timestamp | None = None
    active: bool = Field(description="Whether it opens the desktop now (neither expired nor revoked)")
    url: str | None = Field(None, description="The link itself: in the answer that creates it only")


class RedeemInvitation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=16, max_length=128)


class RedeemedOut(BaseModel):
    uid: str
    name: str
    role: str


class SupportPrompt(BaseModel):
    username: str
    full_name: str
    roles: list[str]
    requested_at: Timestamp
    prompt_until: Timestamp
    owner_must_answer: bool = Field(description="The owner is staff: no answer means no access")


class SupportPromptEvent(BaseModel):
    """Support requests the owner's open page asks about (the ``support`` event)."""

    uid: str
    requests: list[SupportPrompt] = Field(default_factory=list)


class SupportSessionOut(BaseModel):
    username: str
    full_name: str
    protocol: str
    started_at: Timestamp
    ended_at: Timestamp | None = None


class SupportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    q: str = Field("", max_length=100, description="Part of the instance's name, uid, or the owner's name")
    instrument: str = Field("", max_length=64)
    state: str = Field("", max_length=32)
    limit: int = Field(100, ge=1, le=500)


class SupportInstanceOut(BaseModel):
    uid: str
    name: str
    state: str
    owner: str
    owner_name: str
    instruments: list[str]
    proposals: list[str]
    created_at: Timestamp
    access: Literal["member", "pending", "refused", "none"]
