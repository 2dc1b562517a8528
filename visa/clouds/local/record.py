"""A local session's record: what the provider decided for it, written as JSON in its
directory (``instance.json``) and read back by the provider and by the supervisor script.

Stdlib only and free of visa's imports: the supervisor loads this file beside it, outside
visa's process and inside the sandbox (where the session reads its part, ``session.json``).

A record names its ``version``. One without is an earlier visa's, written before records
were typed: the keys it holds that this one no longer reads are skipped, so its sessions
still list, stop and start. Any other unknown key, a missing one or one of the wrong type
is a ``RecordError`` naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERSION = 1
# The default of ``session_log_max_bytes`` (the supervisor's, for records without one).
DEFAULT_LOG_MAX_BYTES = 10 * 2**20


class RecordError(ValueError):
    """A record this visa cannot read: the file, the field and what is wrong with it."""


@dataclass(frozen=True)
class Mount:
    """A host directory bound into the session at ``target``."""

    source: str
    target: str
    read_only: bool


@dataclass(frozen=True)
class SessionAccount:
    """Who the session is in its sandbox: the unix account and its supplementary groups."""

    name: str
    uid: int
    gid: int
    groups: list[int] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class SessionRecord:
    """A session, as decided when it was created (and refreshed at each start)."""

    name: str
    instance_uid: str
    protocols: dict[str, int]
    screen_width: int
    screen_height: int
    keyboard_layout: str
    mounts: list[Mount]
    isolation: str  # "sandbox" or "none"
    mount_mode: str  # "sandbox", "symlinks" or "none"
    vnc_server: str  # "tigervnc" or "x11vnc"
    path: str  # where the session's programs are found
    jupyter_command: list[str]
    jupyter_allow_origin: str
    version: int = VERSION
    # MappingKernelManager's culling of idle kernels (0: none).
    jupyter_cull_idle_seconds: int = 0
    jupyter_cull_interval_seconds: int = 300
    jupyter_cull_connected: bool = False
    created_at: str | None = None
    owner_username: str | None = None
    # The owner's home on the host, kept across instances (None: the instance's own ``home``).
    home_dir: str | None = None
    cores: int = 0
    memory_mb: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    limitations: list[str] = field(default_factory=list)
    # Absolute paths of the programs the session runs, resolved in ``path`` by the provider.
    programs: dict[str, str] = field(default_factory=dict)
    # The Python that runs the desktop's video proxy in front of the VNC server (None: no proxy).
    video_python: str | None = None
    tools: dict[str, bool] = field(default_factory=dict)  # optional programs present
    session_log_max_bytes: int = DEFAULT_LOG_MAX_BYTES
    network: str = "none"  # "none", "outside" (sandboxed) or "host" (no sandbox)
    # In a sandbox: its account and where it sees its home.
    account: SessionAccount | None = None
    home: str | None = None
    # Set at each start of a sandboxed session, for the supervisor.
    slirp_account: list[int] | None = None  # uid and gid slirp4netns runs as (network = outside, root)
    blocked_networks: list[str] = field(default_factory=list)
    sandbox_argv: list[str] = field(default_factory=list)
    sandbox_fds: list[int] = field(default_factory=list)  # positions in sandbox_argv of data directories
    seccomp: bool = False
    cgroups: list[str] = field(default_factory=list)
    # session.json only: the variable every process of the session carries.
    marker: str | None = None

    def to_json(self) -> str:
        """The record as written: every field, None as null."""
        return json.dumps(_plain(self), indent=1, sort_keys=True)

    def replace(self, **changes: Any) -> SessionRecord:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_json(cls, text: str, where: str) -> SessionRecord:
        """The record ``text`` holds (``where`` names its file in errors)."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RecordError(f"{where}: not JSON ({exc})") from None
        return cls.from_dict(data, where)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> SessionRecord:
        if not isinstance(data, dict):
            raise RecordError(f"{where}: a session record is a JSON object, not {_kind(data)}")
        version = data.get("version")
        if version is not None and version != VERSION:
            raise RecordError(f"{where}: record version {version!r}, this visa reads version {VERSION}")
        record: SessionRecord = _build(cls, data, where, lenient=version is None)
        return record


def read(path: Path) -> SessionRecord | None:
    """The record at ``path``; None where there is no file (or it cannot be read yet).
    Raises ``RecordError`` for a file that is no record of this visa's."""
    try:
        text = path.read_text()
    except OSError:
        return None
    return SessionRecord.from_json(text, str(path))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _build(cls: Any, data: dict[str, Any], where: str, *, lenient: bool) -> Any:
    """An instance of the dataclass ``cls`` from ``data``, every field checked against its type."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown and not lenient:
        raise RecordError(f"{where}: field {unknown[0]!r} is unknown")
    values = {}
    for item in dataclasses.fields(cls):
        if item.name not in data:
            if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
                raise RecordError(f"{where}: field {item.name!r} is missing")
            continue
        values[item.name] = _value(data[item.name], hints[item.name], f"{where}: field {item.name!r}", lenient)
    return cls(**values)


def _value(value: Any, kind: Any, where: str, lenient: bool) -> Any:
    """``value`` checked against the type ``kind`` (nested dataclasses built)."""
    if kind is Any:
        return value
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return _value(value, inner, where, lenient)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise RecordError(f"{where} must be an object, not {_kind(value)}")
        return _build(kind, value, where, lenient=lenient)
    if origin is list:
        if not isinstance(value, list):
            raise RecordError(f"{where} must be a list, not {_kind(value)}")
        (inner,) = typing.get_args(kind)
        return [_value(item, inner, f"{where}[{index}]", lenient) for index, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecordError(f"{where} must be an object, not {_kind(value)}")
        _, inner = typing.get_args(kind)
        return {key: _value(item, inner, f"{where}[{key!r}]", lenient) for key, item in value.items()}
    # JSON's true is no number, nor 1 a boolean.
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise RecordError(f"{where} must be {_NAMES.get(kind, kind.__name__)}, not {_kind(value)}")
    return value


_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


def _kind(value: Any) -> str:
    names = {str: "a string", int: "a number", float: "a number", bool: "a boolean", list: "a list",
             dict: "an object", type(None): "null"}  # fmt: skip
    return names.get(type(value), type(value).__name__)
