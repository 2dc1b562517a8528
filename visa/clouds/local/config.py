"""The local cloud's configuration (the Cloud row's ``config``) and the programs its sessions run."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from visa.clouds.local.accounts import ACCOUNT_RE, MIN_SESSION_UID
from visa.clouds.local.record import DEFAULT_LOG_MAX_BYTES

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Program -> Debian package that ships it.
PACKAGES = {
    "Xtigervnc": "tigervnc-standalone-server",
    "vncpasswd": "tigervnc-tools",
    "Xvfb": "xvfb",
    "x11vnc": "x11vnc",
    "openbox": "openbox",
    "xterm": "xterm",
    "xsetroot": "x11-xserver-utils",
    "setxkbmap": "x11-xkb-utils",
    "bwrap": "bubblewrap",
    "setpriv": "util-linux",
    "nsenter": "util-linux",
    "useradd": "passwd",
    "slirp4netns": "slirp4netns",
    "groupadd": "passwd",
    "unshare": "util-linux",
    "iptables-restore": "iptables",
    "cupsd": "cups",
}
# Nice to have: the session starts without them, with a warning.
OPTIONAL_PROGRAMS = ("xsetroot", "setxkbmap", "cupsd")


class LocalConfig(BaseModel):
    """The local cloud's settings (the Cloud row's ``config``), validated at construction."""

    model_config = ConfigDict(extra="forbid")

    root_dir: str | None = Field(None, description="Instance directories; default <data_dir>/local-instances")
    path: str | None = Field(
        None, description="Where the sessions' programs are found (never visa's own PATH); default " + DEFAULT_PATH
    )
    vnc_server: Literal["tigervnc", "x11vnc"] = "tigervnc"
    video: bool = Field(
        True,
        description="Desktops send the regions that move as H.264 to browsers that decode it (an RFB proxy "
        "beside the VNC server, in the session's sandbox) and everything at rest losslessly; false: the VNC "
        "server's own encodings only",
    )
    video_python: str | None = Field(
        None, description="The Python that runs the desktop's video proxy (with PyAV, NumPy and cryptography: "
        "visa's `local` extra); default visa's own"
    )
    isolation: Literal["auto", "none"] = Field(
        "auto", description="auto: sandbox each session where the machine allows; none: operator only"
    )
    isolate_mounts: bool | None = Field(None, description="Old name: false is isolation = none")
    network: Literal["none", "outside"] = Field(
        "none",
        description="What a sandboxed session reaches: none (its own loopback only), or outside "
        "(through slirp4netns, as a VM behind NAT; never the host's loopback)",
    )
    blocked_networks: list[str] = Field(
        default_factory=list,
        description="IPv4 networks sessions with network = outside never reach, besides 169.254.0.0/16 "
        "and the host's own addresses (the site's internal services, for example)",
    )
    network_account: str = Field(
        "_visa-net", description="Unix account slirp4netns runs as (network = outside, visa as root); made if missing"
    )
    uid_range: tuple[int, int] = Field(
        (200000, 299999), description="uids for accounts made for users without uid_number"
    )
    account_prefix: str = Field("visa-", description="Unix account of user U: <prefix>U")
    operator_usernames: list[str] | None = Field(
        None, description="The visa users served where sessions cannot be isolated (never when visa is "
        "root); unset or empty: nobody"
    )
    cgroup_root: str = Field("/sys/fs/cgroup", description="Where the cgroup controllers are mounted")
    pids_max: int = Field(2048, ge=16, description="Processes and threads per session")
    sandbox_paths: list[str] = Field(
        default_factory=list, description="More host directories sessions see read-only (software)"
    )
    jupyter_command: list[str] | None = Field(None, description="argv; default this Python's -m jupyterlab")
    jupyter_allow_origin: str = "*"
    sftp_server: str = Field(
        "/usr/lib/openssh/sftp-server", description="OpenSSH's sftp-server, run inside sessions for file transfers"
    )
    max_instances: int | None = Field(None, ge=0)
    cpu_allocation_ratio: float = Field(
        16.0, gt=0, description="Cores sessions may be given per core of the host (cgroups share them)"
    )
    stop_timeout: float = Field(5, gt=0)
    session_log_max_bytes: int = Field(
        DEFAULT_LOG_MAX_BYTES, ge=65536,
        description="session.log (what the session's programs print) is rotated at this size, one old file kept",
    )
    provisioning: dict[str, Any] = Field(default_factory=dict, description="Read by visa.provisioning")

    @field_validator("uid_range")
    @classmethod
    def _uid_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not MIN_SESSION_UID <= value[0] <= value[1]:
            raise ValueError(f"must be [low, high] with {MIN_SESSION_UID} <= low <= high")
        return value

    @field_validator("account_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,15}", value):
            raise ValueError("must be a short lower-case unix name prefix")
        return value

    @field_validator("blocked_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        out = []
        for network in value:
            try:
                parsed = ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not an IP network (a.b.c.d/n)") from None
            if parsed.version != 4:
                raise ValueError(f"{network!r}: sessions have IPv4 only, give an IPv4 network")
            out.append(str(parsed))
        return out

    @field_validator("network_account")
    @classmethod
    def _network_account(cls, value: str) -> str:
        if not ACCOUNT_RE.match(value) or value == "root":
            raise ValueError("must be a unix account name other than root")
        return value

    @field_validator("sandbox_paths")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/") or os.path.normpath(path) != path or path == "/":
                raise ValueError(f"{path!r} is not a normalised absolute path below /")
        return value


def default_root(data_dir: Path) -> Path:
    """Where the sessions live when the cloud's config names no ``root_dir``: in visa's data directory."""
    return (data_dir / "local-instances").resolve()
