"""Instances in and out: input for creating and changing them (shared by the REST API, pages and CLI),
and the answers that show them (never their secret, never a connect token)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from visa.instances.models import InstanceState
from visa.paging import PageQuery
from visa.provisioning.names import KEYBOARD_NAMES
from visa.types import DbId, Timestamp


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


class EditInstance(BaseModel):
    """What the owner may change after creation (absent: unchanged); the desktop gets the keyboard
    layout and screen size at the next connection."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

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


class ProgressStep(BaseModel):
    key: str
    label: str
    status: Literal["done", "current", "failed", "todo"]
    at: str | None = None


class ProgressOut(BaseModel):
    """The named steps of the latest build, start or reboot."""

    action: str
    steps: list[ProgressStep]
    done: int
    total: int
    failed: bool
    message: str | None
    finished: bool


class CommandOut(BaseModel):
    action: str
    state: str
    message: str | None
    created_at: str
    finished_at: str | None


# --- the event stream (``GET /api/events``): one model per event -----------------------------


class ReadyEvent(BaseModel):
    """First event of a stream: the caller's instances and a short tag of what the pages show of each."""

    uids: list[str]
    versions: dict[str, str]


class InstancesEvent(BaseModel):
    """An instance appeared or went away."""

    uids: list[str]


class InstanceEvent(BaseModel):
    """One changed instance: the instance, its progress and its latest commands."""

    instance: InstanceOut
    progress: ProgressOut | None
    history: list[CommandOut]
    version: str | None = None


class ThumbnailEvent(BaseModel):
    uid: str
    updated_at: Timestamp | None
    url: str


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


class FilesQuery(BaseModel):
    path: str | None = Field(None, max_length=4096, description="Absolute path in the instance (default: the home)")


class DownloadQuery(BaseModel):
    path: str = Field(max_length=4096, description="Absolute path of a file in the instance")


class UploadQuery(BaseModel):
    path: str = Field(max_length=4096, description="Absolute path of the file to write in the instance")
    offset: int = Field(0, ge=0, description="Resume: the bytes the file already has (the body is the rest)")
    overwrite: bool = Field(False, description="Replace an existing regular file")


class FileEntryOut(BaseModel):
    name: str
    path: str
    kind: Literal["file", "dir", "link", "other"]
    size: int | None
    modified: int | None = Field(description="Seconds since the epoch, as the instance says")


class FileListingOut(BaseModel):
    path: str
    roots: list[str] = Field(description="Where files may be read and written: the home first")
    entries: list[FileEntryOut]
    truncated: bool = Field(description="More entries than the listing limit: the rest are not shown")
    skipped: int = Field(description="Entries left out because their names are not UTF-8")


class UploadOut(BaseModel):
    path: str
    bytes: int = Field(description="Bytes written by this request")
    size: int = Field(description="The file's size now (offset + bytes)")


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



class InstanceQuery(PageQuery):
    state: list[InstanceState] = Field(default_factory=list, description="Any of these states")
    owner: str | None = Field(None, max_length=64, description="Owner's username")
    image: str | None = Field(None, max_length=64, description="Image name")
    flavour: str | None = Field(None, max_length=64, description="Flavour name")
    cloud: str | None = Field(None, max_length=64, description="Cloud name")
    q: str | None = Field(None, max_length=100, description="Part of the name or uid")
    deleted: bool = Field(False, description="Include deleted instances")
    sort: InstanceSort = "-created_at"


# --- presence, invitations, support -------------------------------------------------------------
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
