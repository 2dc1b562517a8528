"""Instances in and out: input for creating and changing them (shared by the REST API, pages and CLI),
and the answers that show them (never their secret, never a connect token)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, Field, field_validator, model_validator

from visa.instances.models import InstanceState
from visa.paging import PageQuery
from visa.provisioning.names import KEYBOARD_NAMES
from visa.types import DbId, Input, Timestamp


class CreateInstance(Input):
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
    own_home: bool = Field(
        False, description="A home of its own instead of the owner's home shared by all their machines: "
        "needed for members to type in it (they act as the owner inside it)",
    )

    @field_validator("keyboard_layout")
    @classmethod
    def _offered_layout(cls, value: str) -> str:
        if value not in KEYBOARD_NAMES:
            raise ValueError(f"unknown keyboard layout; one of {', '.join(sorted(KEYBOARD_NAMES))}")
        return value


MemberAccessMode = Annotated[str, Field(description="image, owner_required or unrestricted")]
MembersNeedOwner = Annotated[bool, Field(description="what applies now: the instance's mode or its image's rule")]


class MemberAccessIn(Input):
    mode: Literal["image", "owner_required", "unrestricted"] = Field(
        description="Members other than the owner connect only while the owner is connected: as the "
        "image says, always, or never (staff never wait)")


class MemberAccessOut(BaseModel):
    uid: str
    member_access: MemberAccessMode
    members_need_owner: MembersNeedOwner


class EditInstance(Input):
    """What the owner may change after creation (absent: unchanged); the desktop gets the keyboard
    layout and screen size at the next connection."""

    name: str | None = Field(None, min_length=1, max_length=100)
    comments: str | None = Field(None, max_length=2000)
    screen_width: int | None = Field(None, ge=640, le=7680)
    screen_height: int | None = Field(None, ge=480, le=4320)
    keyboard_layout: str | None = Field(None, max_length=32, description="One of the layouts the create page offers")
    clipboard_to_viewers: bool | None = Field(
        None, description="Whether the desktop's clipboard reaches view-only members (GUESTs) too"
    )

    @field_validator("keyboard_layout")
    @classmethod
    def _offered_layout(cls, value: str | None) -> str | None:
        if value is not None and value not in KEYBOARD_NAMES:
            raise ValueError(f"unknown keyboard layout; one of {', '.join(sorted(KEYBOARD_NAMES))}")
        return value

    @field_validator("name", "comments", "screen_width", "screen_height", "keyboard_layout", "clipboard_to_viewers",
                     mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Run only for values sent: an explicit null is a mistake, not "unchanged".
        if value is None:
            raise ValueError("cannot be null (leave the field out to keep it)")
        return value

    @model_validator(mode="after")
    def _something(self) -> EditInstance:
        if not self.model_fields_set:
            raise ValueError("nothing to change: give name, comments, keyboard_layout, screen_width/screen_height "
                             "or clipboard_to_viewers")
        return self


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("give a timezone (e.g. 2026-02-01T12:00:00Z)")
    return value


class RequestExtension(Input):
    requested_until: datetime = Field(validation_alias=AliasChoices("requested_until", "until"))
    comment: str = Field("", max_length=2000)

    @field_validator("requested_until")
    @classmethod
    def _tz(cls, value: datetime) -> datetime:
        return _aware(value)


class HandleExtension(Input):
    granted_until: datetime | None = Field(
        None, validation_alias=AliasChoices("granted_until", "until"),
        description="Accept until this date (default: the date asked for)",
    )
    response: str = Field("", max_length=2000)

    @field_validator("granted_until")
    @classmethod
    def _tz(cls, value: datetime | None) -> datetime | None:
        return _aware(value) if value is not None else None


# --- answers ---------------------------------------------------------------------------------


class OwnerOut(BaseModel):
    username: str
    full_name: str


class ImageBrief(BaseModel):
    name: str
    environment: str
    version: str


class FlavourBrief(BaseModel):
    name: str
    cores: int
    memory_mb: int
    gpu_kind: str | None
    gpu_count: int


class PlanBrief(BaseModel):
    id: int
    image: ImageBrief
    flavour: FlavourBrief


class ExperimentBrief(BaseModel):
    id: int
    external_id: str
    proposal: str
    instrument: str


class Screen(BaseModel):
    width: int
    height: int


class InstanceOut(BaseModel):
    """An instance as its members see it (never its secret)."""

    uid: str
    name: str
    state: str
    owner: OwnerOut
    role: str | None = Field(description="The caller's member role, if any")
    plan: PlanBrief
    protocols: list[str]
    experiments: list[ExperimentBrief]
    open_data: list[ExperimentBrief] = Field(description="Asked for as open data (embargo ended): raw data, read-only")
    cloud: str
    screen: Screen
    keyboard_layout: str
    clipboard_to_viewers: bool = Field(description="Whether the desktop's clipboard reaches view-only members")
    error: str | None
    created_at: Timestamp
    terminates_at: Timestamp
    seconds_left: int
    last_seen_at: Timestamp | None
    comments: str


# --- the event stream (``GET /api/events``): one model per event -----------------------------


class ReadyEvent(BaseModel):
    """First event of a stream: the caller's instances and a short tag of what the pages show of each."""

    uids: list[str]
    versions: dict[str, str]


class InstancesEvent(BaseModel):
    """An instance appeared or went away."""

    uids: list[str]


class ThumbnailEvent(BaseModel):
    uid: str
    updated_at: Timestamp | None
    url: str


class ThumbnailOut(BaseModel):
    uid: str
    updated_at: Timestamp
    bytes: int


class ExtensionInstance(BaseModel):
    uid: str
    name: str
    owner: str
    terminates_at: Timestamp


class ExtensionOut(BaseModel):
    id: int
    state: Literal["PENDING", "ACCEPTED", "REFUSED"]
    requested_until: Timestamp
    granted_until: Timestamp | None
    comment: str
    response: str
    created_at: Timestamp
    handled_at: Timestamp | None
    instance: ExtensionInstance | None = None


class ExtensionQuery(BaseModel):
    state: Literal["PENDING", "ACCEPTED", "REFUSED", "ALL"] = "PENDING"


# --- everyone's instances (administrators) --------------------------------------------------

INSTANCE_SORTS = ("created_at", "terminates_at", "state_changed_at", "last_seen_at", "name", "state", "owner")

InstanceSort = Literal[
    "created_at", "-created_at", "terminates_at", "-terminates_at", "state_changed_at", "-state_changed_at",
    "last_seen_at", "-last_seen_at", "name", "-name", "state", "-state", "owner", "-owner",
]


ATTRIBUTE_KEY = r"^[a-z][a-z0-9_.-]{0,63}$"
AttributeKey = Annotated[str, Field(pattern=ATTRIBUTE_KEY, max_length=64,
                                    description="Lower-case letters, digits, '_', '.', '-'; a letter first")]
AttributeValue = Annotated[str, Field(min_length=1, max_length=255)]


class AttributeDefinitionIn(Input):
    key: AttributeKey
    label: str = Field(min_length=1, max_length=100, description="What the pages call it")


class AttributeDefinitionOut(BaseModel):
    key: str
    label: str
    instances: int = Field(description="How many instances have a value for it")


class AttributeIn(Input):
    key: AttributeKey
    value: AttributeValue


class AttributeOut(BaseModel):
    key: str
    label: str
    value: str


class InstanceAttributesOut(BaseModel):
    uid: str
    attributes: list[AttributeOut]


def parse_attribute_filter(item: str) -> tuple[str, str]:
    """``key:value`` of the ``attribute`` filter (the value may hold ':')."""
    key, sep, value = item.partition(":")
    if not sep or not value:
        raise ValueError("give key:value")
    if len(value) > 255:
        raise ValueError("the value is longer than 255 characters")
    if not re.fullmatch(ATTRIBUTE_KEY, key):
        raise ValueError("the key is not an attribute key")
    return key, value


class InstanceQuery(PageQuery):
    state: list[InstanceState] = Field(default_factory=list, description="Any of these states")
    owner: str | None = Field(None, max_length=64, description="Owner's username")
    image: str | None = Field(None, max_length=64, description="Image name")
    flavour: str | None = Field(None, max_length=64, description="Flavour name")
    cloud: str | None = Field(None, max_length=64, description="Cloud name")
    q: str | None = Field(None, max_length=100, description="Part of the name or uid")
    deleted: bool = Field(False, description="Include deleted instances")
    attribute: list[str] = Field(default_factory=list, max_length=10,
                                 description="key:value: instances with this attribute value (all given must match)")
    sort: InstanceSort = "-created_at"

    @field_validator("attribute")
    @classmethod
    def _attribute_pairs(cls, items: list[str]) -> list[str]:
        for item in items:
            parse_attribute_filter(item)
        return items
