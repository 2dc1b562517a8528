"""The local provider: visa's embedded default cloud, one session on this machine per instance.

An instance is a directory ``<root_dir>/<instance uid>`` (``root_dir`` defaults to
``<data_dir>/local-instances``, mode 0700) holding its spec, status, logs and pid file, the
session's ``home`` and its ``run`` directory, and a supervisor process
(:mod:`visa.clouds.local_session`) that runs

* a desktop when the spec asks for ``VNC``: TigerVNC's ``Xtigervnc`` (X and VNC server in
  one, VncAuth with the instance secret) or ``Xvfb`` + ``x11vnc``, openbox and an xterm;
* JupyterLab when it asks for ``JUPYTER``, under ``/jupyter/<uid>/`` with the secret as token;

each listening on a unix socket in ``run/``, reported in ``Server.sockets`` (no TCP port).

Isolation (:meth:`LocalProvider.isolation_report`): everything inside a session is
hostile, so where it can visa runs each session in a bubblewrap sandbox

* as the owner's own unix account: when visa is root it creates one on demand (the user's
  ``uid_number``/``gid_number`` when set, else a free uid of ``uid_range`` that no visa user
  has), the way JupyterHub's ``LocalAuthenticator`` creates system users, but only the account
  recorded in the database as the owner's (``ServerSpec.account``, planned by
  :meth:`LocalProvider.new_account`): never one found by name or uid; as another user, with
  user namespaces, every sandbox runs as visa's own uid, mapped;
* seeing only the system's programs (``/usr``, a few files of ``/etc``, a private ``/tmp``),
  its home, its ``run`` directory and the mounts of its spec (raw data read-only,
  processed writable) at the targets a VM would have; not visa's data directory, nor
  other sessions;
* in new pid, IPC, UTS and network namespaces (only a loopback of its own: the host's
  database, cloud APIs and other sessions' sockets are out of reach), with no capabilities
  and ``no_new_privs``;
* in cgroups that enforce the flavour's cores and memory and bound its processes, where the
  machine lets visa make them (``cgroup_root``).

Where it cannot (not root and no user namespaces, no bubblewrap, or ``isolation = "none"``)
the session runs as visa's own user with its data as symlinks, and the cloud serves only the
visa users named in ``operator_usernames`` (unset or empty: nobody); as root it serves nobody,
for such a session would run as root.

Everything the provider knows is on disk, so a restarted visa lists, stops and deletes the
sessions an earlier one started. States: supervisor starting -> BUILDING, sockets answering
-> ACTIVE, stopped by us or by a reboot of the host -> STOPPED, anything else that ended ->
ERROR with the fault. The config keys are the fields of :class:`LocalConfig`.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import getpass
import grp
import hashlib
import ipaddress
import logging
import os
import pwd
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from visa.clouds import local_session as session
from visa.clouds import seccomp
from visa.clouds.base import (
    MEMORY_MB,
    VCPU,
    Capacity,
    CloudLimits,
    HostCapacity,
    Pool,
    Provider,
    Server,
    ServerSpec,
)
from visa.clouds.sftp import FileAccess, over_process
from visa.errors import CloudError, InvalidInput
from visa.settings import Settings
from visa.states import InstanceState

log = logging.getLogger(__name__)

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
}
# Nice to have: the session starts without them, with a warning.
OPTIONAL_PROGRAMS = ("xsetroot", "setxkbmap")
_UID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ACCOUNT_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# A recorded account may be the facility's own (LDAP names may hold '.' or capitals).
_HOST_ACCOUNT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
# A visa username (visa.users.models.USERNAME_PATTERN): a directory name as it stands.
_USERNAME_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
# The lowest uid a session may run as, whatever the user's record says: never a system account.
MIN_SESSION_UID = 1000
NOBODY_UID = 65534  # the overflow uid: files of unmapped owners show as its
# The files of /etc a desktop, a shell and JupyterLab read; nothing else of the host's /etc.
SANDBOX_ETC = (
    "alternatives", "bash.bashrc", "ca-certificates", "ca-certificates.conf", "fonts", "inputrc",
    "jupyter", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "locale.alias", "localtime", "mime.types",
    "nsswitch.conf", "profile", "profile.d", "python3", "ssl", "terminfo", "timezone", "vim", "X11", "xdg",
)  # fmt: skip
SANDBOX_HOME = "/home"
UNIX_PATH_MAX = 107
# What visa keeps of a command's output in a session (each stream): the session writes it.
EXEC_MAX_OUTPUT = 1 << 20
NS_GET_PARENT = 0xB702  # ioctl on a namespace fd: its parent user namespace (linux/nsfs.h)
# Never reached from a session with network = "outside": link-local, cloud metadata services.
ALWAYS_BLOCKED = ("169.254.0.0/16",)


class LocalConfig(BaseModel):
    """The local cloud's settings (the Cloud row's ``config``), validated at construction."""

    model_config = ConfigDict(extra="forbid")

    root_dir: str | None = Field(None, description="Instance directories; default <data_dir>/local-instances")
    path: str | None = Field(
        None, description="Where the sessions' programs are found (never visa's own PATH); default " + DEFAULT_PATH
    )
    vnc_server: Literal["tigervnc", "x11vnc"] = "tigervnc"
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
        session.DEFAULT_LOG_MAX_BYTES, ge=65536,
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
        if not _ACCOUNT_RE.match(value) or value == "root":
            raise ValueError("must be a unix account name other than root")
        return value

    @field_validator("sandbox_paths")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/") or os.path.normpath(path) != path or path == "/":
                raise ValueError(f"{path!r} is not a normalised absolute path below /")
        return value


@dataclass(frozen=True)
class Isolation:
    """How this machine runs sessions: ``sandbox`` (bubblewrap, with own ``accounts`` when
    root) or ``none`` (visa's own user, operator only), and what is not enforced, why."""

    mode: Literal["sandbox", "none"]
    accounts: bool
    cgroups: bool
    reasons: tuple[str, ...] = ()
    operators: tuple[str, ...] = field(default_factory=tuple)
    network: str = "without network"
    as_root: bool = False  # visa runs as root: an unsandboxed session would too, so none is served

    def summary(self) -> str:
        if self.mode == "sandbox":
            who = "its owner's own unix account" if self.accounts else "visa's uid in a user namespace"
            text = f"sessions run in a bubblewrap sandbox as {who}, {self.network}"
            text += "; cores and memory enforced by cgroups" if self.cgroups else ""
        elif self.as_root:
            text = "sessions are not isolated and visa runs as root: nobody is served (a session would run as root)"
        else:
            text = "sessions are not isolated: only " + (", ".join(self.operators) or "nobody") + " is served"
        return text + ("" if not self.reasons else " (" + "; ".join(self.reasons) + ")")


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()  # supplementary gids


def default_root(settings: Settings) -> Path:
    """Where the sessions live when the cloud's config names no ``root_dir``."""
    return (settings.data_dir / "local-instances").resolve()


class LocalProvider(Provider):
    kind = "local"

    # Reported once per process, not at every create of every instance.
    _warned: ClassVar[set[str]] = set()
    _isolation_cache: ClassVar[dict[tuple[Any, ...], Isolation]] = {}

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        super().__init__(name, config)
        try:
            self.settings = LocalConfig.model_validate(config)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "config"
            raise InvalidInput(f"local cloud config {where}: {error['msg']}", field=where) from None
        cfg = self.settings
        root = cfg.root_dir
        if not root:
            from visa.settings import get_settings

            root = str(default_root(get_settings()))
        self.root = Path(root).resolve()
        # Programs are looked up here once and run by absolute path: whatever visa's own PATH
        # holds (a directory someone else may write) never runs as root or in a session.
        self.path = str(cfg.path or DEFAULT_PATH)
        self.vnc_server = cfg.vnc_server
        command = list(cfg.jupyter_command or [sys.executable, "-m", "jupyterlab"])
        self.jupyter_command = [self._program(command[0]), *command[1:]]
        self.jupyter_allow_origin = cfg.jupyter_allow_origin
        self.sftp_server = cfg.sftp_server
        self.stop_timeout = cfg.stop_timeout
        self.max_instances = cfg.max_instances
        self.cpu_allocation_ratio = cfg.cpu_allocation_ratio
        self.isolate = cfg.isolation == "auto" and cfg.isolate_mounts is not False
        self._software_paths()  # refuses a configuration that would show visa's own files

    @classmethod
    def configured(cls, name: str, config: dict[str, Any], settings: Settings) -> LocalProvider:
        # The sessions live under visa's own data directory unless the cloud says where.
        config = dict(config)
        config.setdefault("root_dir", str(default_root(settings)))
        return cls(name, config)

    # ------------------------------------------------------------------ contract

    def create(self, spec: ServerSpec) -> Server:
        if not _UID_RE.match(spec.instance_uid):
            raise CloudError(f"instance uid {spec.instance_uid!r} cannot name a directory")
        existing = self.get(spec.instance_uid)
        if existing is not None:  # a repeated create: the scheduler may retry
            return existing
        unknown = set(spec.protocols) - {"VNC", "JUPYTER"}
        if unknown:
            raise CloudError(f"the local cloud cannot serve {', '.join(sorted(unknown))}")
        isolation = self.isolation_report()
        tools = self._check_programs(spec.protocols, isolation)
        if isolation.mode == "none" and isolation.as_root:
            raise CloudError(
                "this local cloud cannot isolate sessions and visa runs as root: the session would run "
                f"as root, refused: {'; '.join(isolation.reasons)}"
            )
        if isolation.mode == "none" and spec.owner_username not in isolation.operators:
            raise CloudError(
                "this local cloud cannot isolate sessions, so it serves only its operator "
                f"({', '.join(isolation.operators) or 'nobody'}): {'; '.join(isolation.reasons)}"
            )
        final = self.root / spec.instance_uid
        if len(str(final / session.SOCKETS_DIR / session.SOCKETS["JUPYTER"])) > UNIX_PATH_MAX:
            raise CloudError(f"root_dir {self.root} is too long for the sessions' unix sockets")
        for mount in spec.mounts:
            if mount.kind != "bind":
                raise CloudError(
                    f"the local cloud binds host directories and cannot mount {mount.kind} {mount.source}: "
                    "set the cloud's provisioning mount_type to bind"
                )
            if (
                not mount.target.startswith("/")
                or os.path.normpath(mount.target) != mount.target
                or mount.target == "/"
                or mount.target.split("/")[1] in ("proc", "dev", "tmp", "run", "usr", "etc", "home")
            ):
                raise CloudError(f"mount target {mount.target!r} must be a normalised absolute path below /")
        account = self._account(spec) if isolation.accounts else None
        # A machine others act in gets the instance's own home (made below), never the owner's.
        home_dir = None if spec.own_home else self._home_dir(spec, account)
        for mount in spec.mounts:
            self._prepare_data_dir(mount.source, writable=not mount.read_only, account=account)

        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = self.root / f".creating-{spec.instance_uid}-{secrets.token_hex(4)}"
        staging.mkdir(mode=0o700)
        try:
            run_dir = staging / session.RUN_DIR
            for directory in (staging / session.HOME_DIR, run_dir):
                directory.mkdir(mode=0o700)
            self._write_secret(run_dir, spec.secret, "VNC" in spec.protocols)
            session.write_xauthority(run_dir / session.XAUTHORITY_FILE, secrets.token_bytes(16))
            mount_mode = "sandbox" if isolation.mode == "sandbox" else ("symlinks" if spec.mounts else "none")
            if mount_mode == "symlinks":
                self._make_symlinks(staging, spec)
            limitations = list(isolation.reasons)
            if mount_mode == "symlinks":
                limitations.append("not isolated: data are symlinks under the instance directory, not read-only")
            record: dict[str, Any] = {
                "name": spec.name,
                "instance_uid": spec.instance_uid,
                "created_at": datetime.now(UTC).isoformat(),
                "protocols": dict(spec.protocols),
                "screen_width": spec.screen_width,
                "screen_height": spec.screen_height,
                "keyboard_layout": spec.keyboard_layout,
                "owner_username": spec.owner_username,
                "home_dir": str(home_dir) if home_dir is not None else None,
                "cores": spec.cores,
                "memory_mb": spec.memory_mb,
                "metadata": dict(spec.metadata),
                "mounts": [
                    {"source": m.source, "target": m.target, "read_only": m.read_only} for m in spec.mounts
                ],
                "isolation": isolation.mode,
                "mount_mode": mount_mode,
                "limitations": limitations,
                "vnc_server": self.vnc_server,
                "path": self.path,
                "programs": self._programs(),
                "tools": tools,
                "session_log_max_bytes": self.settings.session_log_max_bytes,
                "jupyter_command": self.jupyter_command,
                "jupyter_allow_origin": self.jupyter_allow_origin,
                "network": self.settings.network if isolation.mode == "sandbox" else "host",
            }
            if isolation.mode == "sandbox":
                record["account"] = self._sandbox_account(account)
                record["home"] = f"{SANDBOX_HOME}/{record['account']['name']}"
                self._write_etc(staging, record)
                if account is not None:
                    for path in (staging / session.HOME_DIR, run_dir, *run_dir.iterdir()):
                        os.chown(path, account.uid, account.gid, follow_symlinks=False)
            session.write_json(staging / session.INSTANCE_FILE, record)
            os.rename(staging, final)  # atomic: list_servers never sees half an instance
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raced = self.get(spec.instance_uid)
            if raced is not None:  # a concurrent create of the same instance won
                return raced
            raise CloudError(f"cannot prepare the session directory: {exc}") from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._launch(final)
        server = self._server(final)
        assert server is not None
        return server

    def get(self, server_id: str) -> Server | None:
        if not _UID_RE.match(server_id):
            return None
        return self._server(self.root / server_id)

    def list_servers(self) -> list[Server]:
        if not self.root.is_dir():
            return []
        servers = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith("."):
                continue
            server = self._server(entry)
            if server is not None:
                servers.append(server)
        return servers

    def start(self, server_id: str) -> None:
        instance_dir = self._existing_dir(server_id)
        if self._supervisor(instance_dir) is not None:
            return
        record = self._record(instance_dir)
        record["tools"] = self._check_programs(record["protocols"], self.isolation_report())
        record["programs"] = self._programs()
        record["session_log_max_bytes"] = self.settings.session_log_max_bytes
        session.write_json(instance_dir / session.INSTANCE_FILE, record)
        (instance_dir / session.STOPPED_FILE).unlink(missing_ok=True)
        # A supervisor killed from outside (OOM, kill -9) may leave its children behind.
        status = session.read_json(instance_dir / session.STATUS_FILE) or {}
        session.kill_session(instance_dir, status.get("pid_ns"), grace=1.0)
        self._remove_stale_x_lock(instance_dir)
        self._launch(instance_dir)

    def stop(self, server_id: str) -> None:
        instance_dir = self.root / server_id
        if not _UID_RE.match(server_id) or not instance_dir.is_dir():
            return
        (instance_dir / session.STOPPED_FILE).touch()
        supervisor = self._supervisor(instance_dir)
        if supervisor is not None:
            pid, start = supervisor
            _kill(pid, signal.SIGTERM)  # it tears the session down and says so in status.json
            deadline = time.monotonic() + self.stop_timeout
            while session.pid_alive(pid, start) and time.monotonic() < deadline:
                time.sleep(0.05)
        # Whatever outlived the supervisor (or a supervisor killed with -9) goes now.
        status = session.read_json(instance_dir / session.STATUS_FILE) or {}
        session.kill_session(instance_dir, status.get("pid_ns"), grace=1.0)
        for cgroup in self._cgroup_dirs(server_id):
            _kill_cgroup(cgroup)
            with contextlib.suppress(OSError):
                cgroup.rmdir()
        self._remove_stale_x_lock(instance_dir)

    def reboot(self, server_id: str) -> None:
        self._existing_dir(server_id)
        self.stop(server_id)
        self.start(server_id)

    def delete(self, server_id: str) -> None:
        instance_dir = self.root / server_id
        if not _UID_RE.match(server_id) or not instance_dir.is_dir():
            return
        self.stop(server_id)
        shutil.rmtree(instance_dir, ignore_errors=True)

    def _allotted(self) -> tuple[int, int, int]:
        """Sessions that hold resources, and the cores and memory their flavours give them."""
        used_instances = used_cores = used_memory = 0
        for server in self.list_servers():
            if server.state in (InstanceState.STOPPED, InstanceState.ERROR):
                continue
            record = self._record(self.root / server.id)
            used_instances += 1
            used_cores += int(record.get("cores", 0))
            used_memory += int(record.get("memory_mb", 0))
        return used_instances, used_cores, used_memory

    def capacity(self) -> Capacity:
        """This host: its cores (times ``cpu_allocation_ratio``) less those the running sessions
        were given, and its free memory now (``MemAvailable``: sessions' real use is in it)."""
        sessions, cores, memory = self._allotted()
        host_cores = os.cpu_count() or 1
        pools = {VCPU: Pool(int(host_cores * self.cpu_allocation_ratio), cores)}
        available = _host_memory_mb("MemAvailable:")
        if available is not None:
            pools[MEMORY_MB] = Pool(available + memory, memory, max_unit=_host_memory_mb())
        if self.max_instances is not None:
            pools["INSTANCES"] = Pool(int(self.max_instances), sessions)
        return Capacity((HostCapacity(os.uname().nodename, pools),))

    def needs(self, flavour_ref: str, cores: int, memory_mb: int) -> dict[str, int]:
        needs = {VCPU: cores, MEMORY_MB: memory_mb}
        if self.max_instances is not None:
            needs["INSTANCES"] = 1
        return needs

    def apply_display(self, server_id: str, *, width: int, height: int, keyboard_layout: str) -> None:
        """The session's record takes the new values (its next start uses them), and a running
        desktop gets the keyboard layout now."""
        instance_dir = self.root / server_id
        if not _UID_RE.match(server_id) or not (instance_dir / session.INSTANCE_FILE).exists():
            return
        record = self._record(instance_dir)
        if (record.get("screen_width"), record.get("screen_height"), record.get("keyboard_layout")) == (
            width, height, keyboard_layout,
        ):
            return
        record.update(screen_width=width, screen_height=height, keyboard_layout=keyboard_layout)
        session.write_json(instance_dir / session.INSTANCE_FILE, record)
        if "VNC" not in record.get("protocols", {}) or self._supervisor(instance_dir) is None:
            return
        if not (record.get("tools") or {}).get("setxkbmap"):
            return
        layout, variant = session.xkb_layout(keyboard_layout)
        done = self.exec_in_session(server_id, ["setxkbmap", layout, *(["-variant", variant] if variant else [])])
        if done.returncode:
            raise CloudError(f"keyboard layout {keyboard_layout!r} not applied: {done.stderr[-200:]!r}")

    def limits(self) -> CloudLimits:
        used_instances, used_cores, used_memory = self._allotted()
        return CloudLimits(
            max_instances=int(self.max_instances) if self.max_instances is not None else None,
            max_cores=os.cpu_count(),
            max_memory_mb=_host_memory_mb(),
            used_instances=used_instances,
            used_cores=used_cores,
            used_memory_mb=used_memory,
        )

    # ------------------------------------------------------------------ isolation

    def isolation(self) -> tuple[bool, str]:
        report = self.isolation_report()
        return report.mode == "sandbox" and report.cgroups, report.summary()

    def isolation_report(self) -> Isolation:
        """What this machine lets visa enforce (probed once per process and configuration)."""
        cfg = self.settings
        key = (self.isolate, self.path, cfg.cgroup_root, tuple(cfg.operator_usernames or ()), cfg.network, os.geteuid())
        cached = self._isolation_cache.get(key)
        if cached is not None:
            return cached
        # Named explicitly: who has visa's unix name as a visa username is nobody in particular.
        operators = tuple(cfg.operator_usernames or ())
        reasons: list[str] = []
        mode: Literal["sandbox", "none"] = "none"
        accounts = False
        bwrap = shutil.which("bwrap", path=self.path)
        if not self.isolate:
            reasons.append("isolation is off in the cloud's config")
        elif bwrap is None:
            reasons.append("bubblewrap is not installed (`apt-get install bubblewrap`)")
        elif not _bwrap_has(bwrap, "--bind-fd"):
            reasons.append("bubblewrap is too old (no --bind-fd, which data directories are bound with): "
                           "install bubblewrap 0.5 or later")
        elif _is_root():
            missing = [p for p in ("setpriv", "nsenter", "useradd", "groupadd") if not shutil.which(p, path=self.path)]
            if missing:
                reasons.append(f"{', '.join(missing)} missing (`apt-get install util-linux passwd`)")
            elif self._probe_bwrap(bwrap, userns=False):
                mode, accounts = "sandbox", True
            else:
                reasons.append("bubblewrap cannot make namespaces here")
        elif self._probe_bwrap(bwrap, userns=True):
            mode = "sandbox"
        else:
            reasons.append("not root and no unprivileged user namespaces: bubblewrap cannot run")
        cgroups = False
        if mode == "sandbox":
            problem = self._cgroup_problem()
            if problem:
                reasons.append(f"cores and memory are not enforced: {problem}")
            else:
                cgroups = True
        network = "without network"
        if self.settings.network == "outside":
            if _is_root():
                network = ("reaching the outside network through an unprivileged slirp4netns (never the host's "
                           "own addresses, 169.254.0.0/16 or blocked_networks)")  # fmt: skip
            else:
                network = "reaching the outside network through slirp4netns (not the host's loopback)"
                reasons.append("network = outside without root: the host's other addresses, 169.254.0.0/16 and "
                               "blocked_networks are reachable from sessions")  # fmt: skip
            if shutil.which("slirp4netns", path=self.path) is None:
                reasons.append("network = outside needs slirp4netns (`apt-get install slirp4netns`)")
        as_root = mode == "none" and _is_root()
        report = Isolation(mode, accounts, cgroups, tuple(reasons), () if as_root else operators, network, as_root)
        self._isolation_cache[key] = report
        if reasons:
            self._warn_once("local cloud: " + report.summary())
        return report

    def _probe_bwrap(self, bwrap: str, *, userns: bool) -> bool:
        argv = [bwrap, *(["--unshare-user"] if userns else []), "--unshare-pid", "--unshare-net",
                "--unshare-ipc", "--ro-bind", "/usr", "/usr", *_usr_links(), "--", "true"]  # fmt: skip
        try:
            return subprocess.run(argv, capture_output=True, timeout=10, check=False).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _cgroup_problem(self) -> str | None:
        """None when visa can make a session's cgroups and set its limits."""
        base = Path(self.settings.cgroup_root)
        if (base / "cgroup.controllers").exists():  # v2
            controllers = set((base / "cgroup.controllers").read_text().split())
            if not {"memory", "cpu", "pids"} <= controllers:
                return f"cgroup v2 at {base} lacks {sorted({'memory', 'cpu', 'pids'} - controllers)}"
            parent = base / "visa"
        else:
            for controller in ("memory", "cpu", "pids"):
                if not (base / controller / "cgroup.procs").exists():
                    return f"no cgroup v1 {controller} controller under {base}"
            parent = base / "memory" / "visa"
        try:
            parent.mkdir(exist_ok=True)
        except OSError as exc:
            return f"cannot create {parent}: {exc.strerror}"
        if not os.access(parent, os.W_OK):
            return f"{parent} is not writable"
        return None

    def _cgroup_dirs(self, server_id: str) -> list[Path]:
        base = Path(self.settings.cgroup_root)
        if (base / "cgroup.controllers").exists():
            return [base / "visa" / server_id]
        return [base / controller / "visa" / server_id for controller in ("memory", "cpu", "pids")]

    def _make_cgroups(self, server_id: str, record: dict[str, Any]) -> list[str]:
        """The session's cgroups with the flavour's limits; the supervisor starts bwrap in them."""
        dirs = self._cgroup_dirs(server_id)
        memory = int(record["memory_mb"]) * 1024 * 1024
        period = 100_000
        quota = max(1, int(record["cores"])) * period
        pids = self.settings.pids_max
        v2 = len(dirs) == 1
        if v2:
            parent = dirs[0].parent
            parent.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                (parent / "cgroup.subtree_control").write_text("+memory +cpu +pids")
        for cgroup in dirs:
            cgroup.parent.mkdir(exist_ok=True)
            cgroup.mkdir(exist_ok=True)
        if v2:
            (dirs[0] / "memory.max").write_text(str(memory))
            with contextlib.suppress(OSError):
                (dirs[0] / "memory.swap.max").write_text("0")
            (dirs[0] / "cpu.max").write_text(f"{quota} {period}")
            (dirs[0] / "pids.max").write_text(str(pids))
        else:
            mem, cpu, pid = dirs
            (mem / "memory.limit_in_bytes").write_text(str(memory))
            with contextlib.suppress(OSError):  # only when swap accounting is on
                (mem / "memory.memsw.limit_in_bytes").write_text(str(memory))
            (cpu / "cpu.cfs_period_us").write_text(str(period))
            (cpu / "cpu.cfs_quota_us").write_text(str(quota))
            (pid / "pids.max").write_text(str(pids))
        return [str(d) for d in dirs]

    # ------------------------------------------------------------------ accounts

    def account_name(self, username: str) -> str:
        """The unix name proposed for ``username``'s account: ``<prefix><username>`` when that is
        a unix name as it stands; any other username gets ``<prefix>-<stem>-<hash>``, whose '-'
        right after the prefix no username yields (a username starts with a letter or '_'), so a
        chosen username never names the account of one that had to change. Only a proposal: the
        account recorded as the user's is the one used (``new_account``)."""
        prefix = self.settings.account_prefix
        if _ACCOUNT_RE.match(prefix + username) and re.match(r"[a-z_]", username):
            return prefix + username
        digest = hashlib.sha256(username.encode()).hexdigest()[:12]
        stem = re.sub(r"[^a-z0-9_-]", "-", username.lower())[: 32 - len(prefix) - 2 - len(digest)]
        return f"{prefix}-{stem}-{digest}"

    def new_account(
        self, username: str, uid: int | None, taken_uids: Collection[int], taken_gids: Collection[int] = ()
    ) -> tuple[str, int] | None:
        """The account to record for a user who has none: the facility's account of their own
        ``uid`` when the host has one, else ``account_name`` with their uid or a free one of
        ``uid_range`` outside every other visa user's uids and gids. A name or uid the host
        already gives another account is refused, never adopted."""
        if not self.isolation_report().accounts:
            return None
        taken = set(taken_uids)
        if uid is not None:
            if uid < MIN_SESSION_UID:
                raise CloudError(f"{username}'s uid {uid} is below {MIN_SESSION_UID}: refused")
            if uid in taken:
                raise CloudError(f"{username}'s uid {uid} is another visa user's account: refused")
            try:
                entry: pwd.struct_passwd | None = pwd.getpwuid(uid)
            except KeyError:
                entry = None
            if entry is not None:
                low, high = self.settings.uid_range
                if low <= uid <= high:
                    raise CloudError(
                        f"{username}'s uid {uid} is the unix account {entry.pw_name}, inside the local cloud's "
                        "uid_range, from which visa gave accounts to others: refused (see `visa check-config`)"
                    )
                if not _HOST_ACCOUNT_RE.match(entry.pw_name):
                    raise CloudError(f"the unix account of uid {uid} has a name visa cannot use: refused")
                return entry.pw_name, uid  # the facility's account: the uid is the user's own
        else:
            uid = self._free_id(taken | set(taken_gids))
        name = self.account_name(username)
        try:
            pwd.getpwnam(name)
        except KeyError:
            return name, uid
        raise CloudError(
            f"the unix account {name} exists but is not recorded as {username}'s: refused "
            "(an operator removes it, or records it as theirs)"
        )

    def _account(self, spec: ServerSpec) -> Account:
        """The owner's recorded unix account (``spec.account``), made now if it does not exist."""
        if spec.account is None:
            raise CloudError(f"no unix account is recorded for {spec.owner_username or 'the owner'}: refused")
        name, uid = spec.account
        if not _HOST_ACCOUNT_RE.match(name) or uid < MIN_SESSION_UID:
            raise CloudError(f"the recorded unix account {name!r} (uid {uid}) cannot run a session: refused")
        if spec.owner_uid is not None and spec.owner_uid != uid:
            raise CloudError(
                f"{spec.owner_username}'s recorded unix account {name} has uid {uid}, not the user's "
                f"uid {spec.owner_uid}: refused"
            )
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _locked(self.root / ".accounts.lock"):
            for _attempt in range(5):
                account = self._existing_account(name, uid, spec)
                if account is not None:
                    return account
                try:
                    other = pwd.getpwuid(uid).pw_name
                except KeyError:
                    other = None
                if other is not None:
                    raise CloudError(f"uid {uid} is the unix account {other}'s, not {name}: refused")
                gid = spec.owner_gid if spec.owner_gid is not None else uid
                if gid < MIN_SESSION_UID:
                    raise CloudError(f"{spec.owner_username}'s gid is below {MIN_SESSION_UID}: refused")
                try:
                    group = grp.getgrgid(gid).gr_name
                except KeyError:
                    _run_admin(["groupadd", "-g", str(gid), name], self.path)
                else:
                    if spec.owner_gid is None and group != name:
                        raise CloudError(f"gid {gid} is the group {group}'s, not {name}: refused")
                _run_admin(
                    ["useradd", "-u", str(uid), "-g", str(gid), "-M", "-N", "-d", f"{SANDBOX_HOME}/{name}",
                     "-s", "/bin/bash", "-c", f"visa session user {spec.owner_username}"[:60], name],
                    self.path,
                )  # fmt: skip
            raise CloudError(f"could not create the unix account {name}")

    def _existing_account(self, name: str, uid: int, spec: ServerSpec) -> Account | None:
        """The recorded account if the host has it, with the recorded uid (else refused)."""
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        if entry.pw_uid != uid:
            raise CloudError(f"unix account {name} has uid {entry.pw_uid}, not its recorded {uid}: refused")
        gid = spec.owner_gid if spec.owner_gid is not None else entry.pw_gid
        if gid < MIN_SESSION_UID or any(g < MIN_SESSION_UID for g in spec.owner_groups):
            raise CloudError(f"{spec.owner_username}'s gid or groups are below {MIN_SESSION_UID}: refused")
        return Account(entry.pw_name, entry.pw_uid, gid, tuple(spec.owner_groups))

    def _free_id(self, taken: Collection[int] = ()) -> int:
        """A uid of ``uid_range`` no account or group of the host has, nor any visa user."""
        low, high = self.settings.uid_range
        used = {p.pw_uid for p in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()} | set(taken)
        for candidate in range(low, high + 1):
            if candidate not in used:
                return candidate
        raise CloudError(f"no free uid left in the local cloud's uid_range {low}-{high}")

    def _network_account(self) -> list[int]:
        """uid and gid of the account slirp4netns runs as: a system account of its own, never
        root nor a session's (its user namespace owns the sessions' network namespaces)."""
        name = self.settings.network_account
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _locked(self.root / ".accounts.lock"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                _run_admin(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                            "--shell", "/usr/sbin/nologin", "--comment", "visa session networks", name], self.path)  # fmt: skip
                entry = pwd.getpwnam(name)
        low, high = self.settings.uid_range
        if entry.pw_uid == 0 or entry.pw_gid == 0 or low <= entry.pw_uid <= high:
            raise CloudError(f"network_account {name} is root or a session's account: refused")
        return [entry.pw_uid, entry.pw_gid]

    def _sandbox_account(self, account: Account | None) -> dict[str, Any]:
        if account is not None:
            return {"name": account.name, "uid": account.uid, "gid": account.gid, "groups": list(account.groups)}
        # In a user namespace only visa's own uid and gid map: no supplementary groups.
        return {"name": _login_name(), "uid": os.getuid(), "gid": os.getgid(), "groups": []}

    def _home_dir(self, spec: ServerSpec, account: Account | None) -> Path:
        """The owner's home on this host, the same for every instance of theirs and kept when
        one is deleted: the site's home share (``spec.home``, a host directory) or
        ``<root_dir>/.homes/<account>``. Made on first use, the account's from then on."""
        if spec.home is not None:
            if spec.home.kind != "bind":
                raise CloudError(f"the local cloud binds host directories and cannot mount the home {spec.home.source}")
            home = Path(spec.home.source)
        else:
            # Without accounts (every session is visa's uid) the username itself names the home.
            owner = spec.owner_username or "operator"
            name = account.name if account is not None else (
                self.settings.account_prefix + owner if _USERNAME_RE.match(owner) else self.account_name(owner))
            home = self.root / ".homes" / name
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            (self.root / ".homes").mkdir(mode=0o700, exist_ok=True)
        if home.is_symlink():
            raise CloudError(f"the home {home} is a symbolic link: refused")
        home.parent.mkdir(parents=True, exist_ok=True)
        try:
            home.mkdir(mode=0o700)
            made = True
        except FileExistsError:
            made = False
        info = home.lstat()
        if not made and not home.is_dir():
            raise CloudError(f"the home {home} is not a directory")
        if account is not None and (made or info.st_uid == 0):
            os.chown(home, account.uid, account.gid, follow_symlinks=False)
        elif account is not None and info.st_uid != account.uid:
            raise CloudError(f"the home {home} belongs to uid {info.st_uid}, not {spec.owner_username}'s")
        return home

    def _prepare_data_dir(self, source: str, *, writable: bool, account: Account | None) -> None:
        """Check a data directory before it is bound: reached without any symbolic link (a
        member may write the proposal's directory, so a link there could lead root to
        ``/etc``). A processed-data area is made on first use, as the facility's storage
        would, and given to the session's account only when visa has just made it: an
        existing directory never changes owner. The supervisor binds it through a descriptor
        it opens the same way, at each start."""
        try:
            fd, made = session.open_dir(source, create=writable)
        except FileNotFoundError:
            raise CloudError(f"data directory {source} does not exist on this host") from None
        except OSError as exc:
            raise CloudError(f"data directory {source} refused: {session.describe(exc)}") from None
        try:
            if made and account is not None:
                session.grant_made_dir(fd, account.uid, account.gid)
        finally:
            os.close(fd)

    def _write_etc(self, staging: Path, record: dict[str, Any]) -> None:
        """passwd and group naming only the session's account, and a hostname."""
        acct = record["account"]
        etc = staging / "etc"
        etc.mkdir()
        (etc / "passwd").write_text(
            "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"{acct['name']}:x:{acct['uid']}:{acct['gid']}::{record['home']}:/bin/bash\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        )
        extra = "".join(f"visa-g{g}:x:{g}:{acct['name']}\n" for g in acct.get("groups") or () if g != acct["gid"])
        (etc / "group").write_text(f"root:x:0:\n{acct['name']}:x:{acct['gid']}:\n{extra}nogroup:x:65534:\n")
        (etc / "hostname").write_text(f"{record['name']}\n")
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost {record['name']}\n::1\tlocalhost\n")
        # slirp4netns answers DNS at 10.0.2.3; without network there is nothing to resolve.
        (etc / "resolv.conf").write_text("nameserver 10.0.2.3\n" if record.get("network") == "outside" else "")
        for child in etc.iterdir():
            child.chmod(0o644)

    # ------------------------------------------------------------------ helpers for callers and tests

    def sandbox_argv(self, instance_dir: Path, record: dict[str, Any], argv: list[str]) -> tuple[list[str], list[int]]:
        """bwrap and its arguments to run ``argv`` as the session's account in its sandbox,
        and the positions of the data directories among them: the supervisor opens each
        (``open_dir``, no link followed) and puts the descriptor there (``--bind-fd``)."""
        acct = record["account"]
        home = record["home"]
        bwrap = shutil.which("bwrap", path=self.path) or "bwrap"
        out = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
               "--unshare-cgroup-try", "--hostname", record["name"][:63]]  # fmt: skip
        # With slirp_account the supervisor starts bwrap in the network namespace it made.
        out += [] if record.get("slirp_account") else ["--unshare-net"]
        root = _is_root()
        if not root:
            out += ["--unshare-user", "--uid", str(acct["uid"]), "--gid", str(acct["gid"]), "--cap-drop", "ALL"]
            # As root there is no user namespace to limit (with one, bwrap would map the
            # account to root): the seccomp filter refuses new user namespaces instead.
            out += ["--disable-userns"] if _bwrap_disables_userns(bwrap) else []
        made: set[str] = set()

        def bind(option: str, source: str, target: str) -> None:
            # bwrap makes missing parents 0700 (root's): made 0755 first, so the account traverses them.
            for parent in reversed(Path(target).parents[:-1]):
                if str(parent) not in made:
                    made.add(str(parent))
                    out.extend(["--perms", "0755", "--dir", str(parent)])
            out.extend([option, source, target])

        out += ["--ro-bind", "/usr", "/usr", *_usr_links()]
        for name in SANDBOX_ETC:
            bind("--ro-bind-try", f"/etc/{name}", f"/etc/{name}")
        etc = instance_dir / "etc"
        for name in ("passwd", "group", "hostname", "hosts", "resolv.conf"):
            bind("--ro-bind", str(etc / name), f"/etc/{name}")
        out += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--dir",
                "/tmp/.X11-unix", "--perms", "1777", "--tmpfs", "/var/tmp"]  # fmt: skip
        for path in self._software_paths():
            bind("--ro-bind", path, path)
        bind("--bind", record.get("home_dir") or str(instance_dir / session.HOME_DIR), home)
        bind("--bind", str(instance_dir / session.RUN_DIR), session.SANDBOX_RUN)
        bind("--ro-bind", session.__file__, session.SANDBOX_SCRIPT)
        fds = []
        for mount in record["mounts"]:
            bind("--ro-bind-fd" if mount["read_only"] else "--bind-fd", mount["source"], mount["target"])
            fds.append(len(out) - 2)
        out += ["--chdir", home, "--"]
        if root:
            out += [self._program("setpriv"), "--reuid", str(acct["uid"]), "--regid", str(acct["gid"]),
                    *_groups_option(acct), "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]  # fmt: skip
        return out + argv, fds

    def _software_paths(self) -> list[str]:
        """Python's prefixes (JupyterLab runs from them) and configured extras, when outside
        /usr: only absolute directories, and never one that shows visa's own files (its data
        directory, the sessions' root, its configuration file, its working directory).
        Raises ``InvalidInput`` naming the setting and the path."""
        found: list[tuple[str, str]] = [(path, "sandbox_paths") for path in self.settings.sandbox_paths]
        prefixes = [sys.prefix, sys.base_prefix]
        if os.path.isabs(self.jupyter_command[0]):  # a bare name found nowhere binds nothing
            prefixes.append(os.path.dirname(os.path.dirname(self.jupyter_command[0])))
            prefixes.append(os.path.dirname(os.path.dirname(os.path.realpath(self.jupyter_command[0]))))
        for prefix in prefixes:
            for candidate in (prefix, os.path.realpath(prefix)):
                if os.path.isabs(candidate) and candidate not in ("/", "/usr") and not candidate.startswith("/usr/"):
                    found.append((os.path.normpath(candidate), "jupyter_command"))
        unique: list[str] = []
        for path, setting in found:
            if path in unique or not os.path.isdir(path):
                continue
            problem = self._shows_visa(os.path.realpath(path))
            if problem:
                raise InvalidInput(f"local cloud config {setting}: {path} would show sessions {problem}", field=setting)
            unique.append(path)
        return unique

    def _shows_visa(self, path: str) -> str | None:
        """What of visa's own a directory bound into sessions is or holds, if anything."""
        from visa.settings import get_settings

        data_dir = os.path.realpath(get_settings().data_dir)
        private = [("visa's data directory " + data_dir, data_dir), ("the sessions' root " + str(self.root), str(self.root))]
        shown = [("visa's working directory " + os.getcwd(), os.path.realpath(os.getcwd()))]
        if os.environ.get("VISA_CONFIG"):
            config = os.path.realpath(os.environ["VISA_CONFIG"])
            shown.append(("visa's configuration file " + config, config))
        for what, own in [*private, *shown]:
            if own == path or own.startswith(path.rstrip("/") + "/"):
                return what
        for what, own in private:  # nor anything inside them
            if path.startswith(own + "/"):
                return what
        return None

    def exec_in_session(
        self,
        server_id: str,
        argv: list[str],
        *,
        timeout: float = 30,
        input: bytes | None = None,
        max_output: int = EXEC_MAX_OUTPUT,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a command as part of a running session, the way its own programs run: in its
        sandbox and cgroups, as its account, with its DISPLAY and HOME (activity probes such
        as ``xprintidle`` use this too). What it prints is the session's: at most
        ``max_output`` bytes of each stream are kept, and a command that prints more is killed
        (returncode -9, its output cut), as is one that outlives ``timeout``
        (``subprocess.TimeoutExpired``)."""
        cmd = self._session_command(server_id, argv)
        try:
            # Never visa's stdin or controlling terminal: a session's process could push keys
            # into an operator's shell through them (TIOCSTI).
            process = subprocess.Popen(
                cmd.argv,
                env=cmd.env,
                cwd=cmd.cwd,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=cmd.fds,
                start_new_session=True,
                preexec_fn=cmd.preexec,  # file writes only
            )
        finally:
            cmd.close()
        return _bounded_output(process, argv, input, timeout, max_output)

    def open_sftp(self, server_id: str) -> FileAccess:
        """OpenSSH's ``sftp-server`` run inside the session exactly as ``exec_in_session`` runs
        a command (its sandbox, cgroups and account), spoken to over a socket pair: the same
        SFTP code as for a VM, and the sandbox's rules for every path. Roots: the session's
        home and its writable mounts (as the session sees them)."""
        if not (os.path.isfile(self.sftp_server) and os.access(self.sftp_server, os.X_OK)):
            raise CloudError(
                f"the local cloud needs {self.sftp_server} for file transfers: "
                "install with `apt-get install openssh-sftp-server`"
            )
        instance_dir = self._existing_dir(server_id)
        record = self._record(instance_dir)
        sandboxed = record.get("isolation") == "sandbox"
        if not sandboxed and _is_root():
            raise CloudError("file transfers need the session's sandbox: this session would run them as root")
        cmd = self._session_command(server_id, [self.sftp_server, "-e", "-l", "ERROR"])
        if sandboxed:
            roots = (record["home"], *(m["target"] for m in record["mounts"] if not m["read_only"]))
        else:
            roots = (str(instance_dir / session.HOME_DIR),)
        try:
            access = over_process(cmd.argv, roots, env=cmd.env, cwd=cmd.cwd, pass_fds=cmd.fds,
                                  preexec_fn=cmd.preexec)
        finally:
            cmd.close()
        return access

    def _session_command(self, server_id: str, argv: list[str]) -> _SessionCommand:
        """``argv`` made to run inside a running session: see ``exec_in_session``. Its program
        is found in the cloud's configured path, here, and run by absolute path."""
        argv = [self._program(argv[0]), *argv[1:]]
        instance_dir = self._existing_dir(server_id)
        if self._supervisor(instance_dir) is None:
            raise CloudError(f"session {server_id} is not running")
        record = self._record(instance_dir)
        status = session.read_json(instance_dir / session.STATUS_FILE) or {}
        sandboxed = record.get("isolation") == "sandbox"
        run_dir = Path(session.SANDBOX_RUN) if sandboxed else instance_dir / session.RUN_DIR
        env = {
            "PATH": self.path,
            "HOME": record["home"] if sandboxed else record.get("home_dir") or str(instance_dir / session.HOME_DIR),
            "XAUTHORITY": str(run_dir / session.XAUTHORITY_FILE),
            session.MARKER_ENV: str(instance_dir),
        }
        display = session.read_display(instance_dir / session.RUN_DIR)
        if display is not None:
            env["DISPLAY"] = f":{display}"
        cgroups = [Path(p) / "cgroup.procs" for p in record.get("cgroups") or []]
        fds: list[int] = []
        if sandboxed:
            target = status.get("sandbox_pid")
            if not target or session.pid_ns_of(int(target)) != status.get("pid_ns"):
                raise CloudError(f"session {server_id} has no sandbox running")
            acct = record["account"]
            namespaces = ["--mount", "--uts", "--ipc", "--net", "--pid", "--root", "--wd"]
            if _is_root():
                drop = [self._program("setpriv"), "--reuid", str(acct["uid"]), "--regid", str(acct["gid"]),
                        *_groups_option(acct), "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]  # fmt: skip
                argv = [self._program("nsenter"), f"--target={target}", *namespaces, "--", *drop, "--", *argv]
            else:
                # bwrap's namespaces belong to its outer user namespace, its processes live in
                # an inner one: enter the outer to join them, then the inner to be the session.
                nsenter = self._program("nsenter")
                inner = os.open(f"/proc/{target}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
                fds = [inner, fcntl.ioctl(inner, NS_GET_PARENT)]
                argv = [
                    nsenter, f"--target={target}", f"--user=/proc/self/fd/{fds[1]}", "--preserve-credentials",
                    *namespaces, "--", nsenter, f"--user=/proc/self/fd/{inner}", "--preserve-credentials", "--",
                    self._program("setpriv"), "--inh-caps=-all", "--no-new-privs", "--", *argv,
                ]  # fmt: skip

        if sandboxed and record.get("seccomp"):
            # Under the session's filter before it enters the sandbox: no process of the session
            # runs without it (one that did could be ptraced into the calls it denies).
            argv = [sys.executable, "-I", seccomp.__file__, str(instance_dir / session.SECCOMP_FILE), "--", *argv]

        def join_cgroups() -> None:
            for procs in cgroups:
                procs.write_text(f"{os.getpid()}\n")

        return _SessionCommand(argv, env, None if sandboxed else env["HOME"], tuple(fds),
                               join_cgroups if cgroups else None)

    # The session's own plumbing: its CPU is not the user's computation.
    _PLUMBING = frozenset({"Xtigervnc", "Xvfb", "x11vnc", "openbox", "xsetroot", "setxkbmap", "bwrap"})

    def activity_report(self, server_id: str) -> dict[str, Any] | None:
        """Activity without SSH: X idle time through the session, CPU of its processes from /proc."""
        instance_dir = self._existing_dir(server_id)
        supervisor = self._supervisor(instance_dir)
        if supervisor is None:
            return None
        record = self._record(instance_dir)
        status = session.read_json(instance_dir / session.STATUS_FILE) or {}
        x_idle = None
        if "VNC" in (record.get("protocols") or {}):
            out = self.exec_in_session(server_id, ["xprintidle"], timeout=5, max_output=64)
            if out.returncode == 0 and out.stdout.strip().isdigit():
                x_idle = int(out.stdout.strip())
        tick = os.sysconf("SC_CLK_TCK")
        processes = []
        for pid in session.session_pids(instance_dir, status.get("pid_ns")):
            if pid == supervisor[0]:
                continue
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            if name in self._PLUMBING:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            processes.append({"pid": pid, "command": name, "cpu_seconds": (int(fields[11]) + int(fields[12])) / tick})
        return {"x_idle_ms": x_idle, "load": list(os.getloadavg()), "cpu_count": os.cpu_count() or 1,
                "processes": processes}

    def instance_dir(self, server_id: str) -> Path:
        return self.root / server_id

    # ------------------------------------------------------------------ internals

    def _server(self, instance_dir: Path) -> Server | None:
        record = session.read_json(instance_dir / session.INSTANCE_FILE)
        if record is None:
            return None
        status = session.read_json(instance_dir / session.STATUS_FILE) or {}
        stopped = (instance_dir / session.STOPPED_FILE).exists()
        alive = self._supervisor(instance_dir) is not None
        phase = status.get("phase")
        fault = None
        if alive and stopped:
            state = InstanceState.STOPPING
        elif alive:
            state = InstanceState.ACTIVE if phase == "running" else InstanceState.BUILDING
        elif stopped:
            state = InstanceState.STOPPED
        elif not (instance_dir / session.PID_FILE).exists():
            state = InstanceState.BUILDING  # between the rename and the launch
        elif status.get("boot_id") and status["boot_id"] != session.boot_id():
            state = InstanceState.STOPPED  # the host restarted: like a VM after a hypervisor reboot
        else:
            state = InstanceState.ERROR
            fault = status.get("fault") or "the session ended unexpectedly"
        created = record.get("created_at")
        published = instance_dir / session.SOCKETS_DIR
        return Server(
            id=instance_dir.name,
            name=record["name"],
            state=state,
            address="127.0.0.1",
            sockets={p: str(published / session.SOCKETS[p]) for p in record["protocols"] if p in session.SOCKETS},
            instance_uid=record["instance_uid"],
            fault=fault,
            created_at=datetime.fromisoformat(created) if created else None,
            provider_state={
                "dir": str(instance_dir),
                "display": status.get("display"),
                "isolation": record.get("isolation", "none"),
                "account": (record.get("account") or {}).get("name"),
                "mount_mode": record["mount_mode"],
                "limitations": record.get("limitations", []),
                "vnc_server": record.get("vnc_server"),
            },
        )

    def _launch(self, instance_dir: Path) -> None:
        """Start the supervisor; it forks away, so this waits only for its first half."""
        record = self._record(instance_dir)
        if record.get("isolation") != "sandbox" and _is_root():
            raise CloudError(f"the session of {instance_dir.name} has no sandbox and visa runs as root: "
                             "it would run as root, refused")
        if record.get("isolation") == "sandbox":
            record.pop("slirp_account", None)
            if record.get("network") == "outside" and _is_root():
                # The supervisor makes the network namespace, firewalls it and runs slirp4netns
                # as this account (see local_session.Supervisor.prepare_network).
                record["slirp_account"] = self._network_account()
                record["blocked_networks"] = [*ALWAYS_BLOCKED, *self.settings.blocked_networks]
            inside = {k: v for k, v in record.items() if k not in ("blocked_networks", "slirp_account")}
            inside["marker"] = str(instance_dir)
            session.write_json(instance_dir / session.RUN_DIR / session.INSIDE_FILE, inside, mode=0o644)
            python = shutil.which("python3", path="/usr/bin") or sys.executable
            record["sandbox_argv"], record["sandbox_fds"] = self.sandbox_argv(
                instance_dir, record,
                [python, "-I", session.SANDBOX_SCRIPT, "--inside", f"{session.SANDBOX_RUN}/{session.INSIDE_FILE}"],
            )  # fmt: skip
            # Written at every start, so a session restarted after an upgrade gets today's filter.
            seccomp.write(str(instance_dir / session.SECCOMP_FILE))
            record["seccomp"] = True
            record["cgroups"] = []
            if self.isolation_report().cgroups:
                try:
                    record["cgroups"] = self._make_cgroups(instance_dir.name, record)
                except OSError as exc:
                    raise CloudError(f"cannot set the session's cgroup limits: {exc.strerror}") from exc
            session.write_json(instance_dir / session.INSTANCE_FILE, record)
        argv = [sys.executable, "-I", session.__file__, str(instance_dir)]
        (instance_dir / session.PID_FILE).unlink(missing_ok=True)
        (instance_dir / session.STATUS_FILE).unlink(missing_ok=True)
        env = {
            "PATH": self.path,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            session.MARKER_ENV: str(instance_dir),
        }
        log_fd = session.open_log(instance_dir / session.SUPERVISOR_LOG)
        try:
            result = subprocess.run(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                timeout=30,
                check=False,
                start_new_session=True,
            )
        finally:
            os.close(log_fd)
        if result.returncode or not (instance_dir / session.PID_FILE).exists():
            raise CloudError(
                f"the session of {instance_dir.name} did not start (exit {result.returncode}); "
                f"see {instance_dir / session.SUPERVISOR_LOG}"
            )

    def _supervisor(self, instance_dir: Path) -> tuple[int, int] | None:
        found = session.read_pid_file(instance_dir)
        if found is None or not session.pid_alive(*found):
            return None
        return found

    def _record(self, instance_dir: Path) -> dict[str, Any]:
        record = session.read_json(instance_dir / session.INSTANCE_FILE)
        if record is None:
            raise CloudError(f"{instance_dir} holds no local instance")
        return record

    def _existing_dir(self, server_id: str) -> Path:
        instance_dir = self.root / server_id
        if not _UID_RE.match(server_id) or not (instance_dir / session.INSTANCE_FILE).exists():
            raise CloudError(f"no local instance {server_id!r}")
        return instance_dir

    def _check_programs(self, protocols: dict[str, int], isolation: Isolation) -> dict[str, bool]:
        """Which optional tools exist; a missing required one is a CloudError naming the
        package to install, and a warning logged once."""
        required: list[str] = []
        if "VNC" in protocols:
            required += ["Xtigervnc", "vncpasswd"] if self.vnc_server == "tigervnc" else ["Xvfb", "x11vnc"]
            required += ["openbox", "xterm"]
        if isolation.mode == "sandbox":
            required += ["bwrap", "nsenter"] + (["setpriv"] if _is_root() else [])
            if self.settings.network == "outside":
                required += ["slirp4netns"] + (["unshare", "iptables-restore"] if _is_root() else [])
        missing = [prog for prog in required if shutil.which(prog, path=self.path) is None]
        if missing:
            packages = sorted({PACKAGES[prog] for prog in missing})
            message = (
                f"the local cloud needs {', '.join(missing)}: install with "
                f"`apt-get install {' '.join(packages)}`"
            )
            self._warn_once(message)
            raise CloudError(message, missing=missing, packages=packages)
        if "JUPYTER" in protocols and self.jupyter_command[1:3] == ["-m", "jupyterlab"]:
            # find_spec, not import: importing jupyterlab takes a second.
            probe = subprocess.run(
                [
                    self.jupyter_command[0],
                    "-c",
                    "import importlib.util as u, sys; sys.exit(not u.find_spec('jupyterlab'))",
                ],
                capture_output=True,
                check=False,
            )
            if probe.returncode:
                message = "the local cloud needs JupyterLab: install with `pip install jupyterlab`"
                self._warn_once(message)
                raise CloudError(message, missing=["jupyterlab"])
        tools = {}
        for prog in OPTIONAL_PROGRAMS:
            tools[prog] = shutil.which(prog, path=self.path) is not None
            if "VNC" in protocols and not tools[prog]:
                self._warn_once(
                    f"{prog} is missing, desktops start without it: `apt-get install {PACKAGES[prog]}`"
                )
        return tools

    def _program(self, name: str) -> str:
        """``name`` as an absolute path in the cloud's configured path (unchanged if not there)."""
        return name if "/" in name else shutil.which(name, path=self.path) or name

    def _programs(self) -> dict[str, str]:
        """The absolute paths of the programs a session runs, for its record."""
        return {name: path for name in PACKAGES if (path := shutil.which(name, path=self.path))}

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)

    def _make_symlinks(self, staging: Path, spec: ServerSpec) -> None:
        """Without a sandbox the data are symlinks under the instance directory."""
        for mount in spec.mounts:
            link = staging / session.SYMLINK_DIR / mount.target.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(mount.source)

    def _write_secret(self, run_dir: Path, secret: str, vnc: bool) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with os.fdopen(os.open(run_dir / session.SECRET_FILE, flags, 0o600), "w") as out:
            out.write(secret)
        if not vnc:
            return
        # VncAuth uses the first 8 characters only; vncpasswd -f obfuscates them for the server.
        result = subprocess.run(
            [self._program("vncpasswd"), "-f"],
            input=(secret + "\n").encode(),
            capture_output=True,
            env={"PATH": self.path},
            check=False,
            timeout=10,
        )
        if result.returncode or len(result.stdout) != 8:
            raise CloudError(f"vncpasswd failed: {result.stderr.decode(errors='replace').strip()}")
        with os.fdopen(os.open(run_dir / session.VNC_PASSWORD_FILE, flags, 0o600), "wb") as out:
            out.write(result.stdout)

    def _remove_stale_x_lock(self, instance_dir: Path) -> None:
        """An X server killed with -9 leaves its lock and socket behind (outside a sandbox,
        whose /tmp is its own)."""
        record = session.read_json(instance_dir / session.INSTANCE_FILE) or {}
        display = session.read_display(instance_dir / session.RUN_DIR)
        if display is None or record.get("isolation") == "sandbox":
            return
        lock = Path(f"/tmp/.X{display}-lock")
        try:
            pid = int(lock.read_text().strip())
        except (OSError, ValueError):
            return
        if not session.pid_alive(pid):
            lock.unlink(missing_ok=True)
            Path(f"/tmp/.X11-unix/X{display}").unlink(missing_ok=True)


def _groups_option(acct: dict[str, Any]) -> list[str]:
    """setpriv's groups: the account's supplementary gids (the facility's groups), else none."""
    groups = [str(int(g)) for g in acct.get("groups") or ()]
    return ["--groups", ",".join(groups)] if groups else ["--clear-groups"]


@dataclass
class _SessionCommand:
    """A command ready to run inside a session, and the descriptors it holds until it has started."""

    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    fds: tuple[int, ...]
    preexec: Any

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


@functools.cache
def _bwrap_has(bwrap: str, option: str) -> bool:
    """Whether this bubblewrap knows ``option`` (its --help lists every one)."""
    try:
        out = subprocess.run([bwrap, "--help"], capture_output=True, stdin=subprocess.DEVNULL, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return option.encode() in out.stdout + out.stderr


def _usr_links() -> list[str]:
    """/bin, /lib... as the host has them: symlinks into /usr (merged /usr) or bound."""
    out: list[str] = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/" + name)
        if path.is_symlink():
            out += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            out += ["--ro-bind", str(path), str(path)]
    return out


def _bwrap_disables_userns(bwrap: str) -> bool:
    """bubblewrap 0.8 and later can forbid user namespaces inside its own."""
    return _bwrap_has(bwrap, "--disable-userns")


def host_account(name: str) -> tuple[str, int]:
    """``name`` and its uid, for an operator recording an account this host already has: only a
    unix account a session may run as (not a system account)."""
    if not _HOST_ACCOUNT_RE.match(name):
        raise InvalidInput(f"{name!r} is not a unix account name", field="account")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise InvalidInput(f"this host has no unix account {name}", field="account") from None
    if entry.pw_uid < MIN_SESSION_UID or entry.pw_uid == NOBODY_UID:
        raise InvalidInput(f"{name} is a system account (uid {entry.pw_uid}): refused", field="account")
    return entry.pw_name, entry.pw_uid


def _run_admin(argv: list[str], path: str) -> None:
    """useradd/groupadd (by absolute path, found in ``path``); 'already exists' (another visa
    made it) is for the caller's retry."""
    argv = [shutil.which(argv[0], path=path) or argv[0], *argv[1:]]
    result = subprocess.run(argv, env={"PATH": path}, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                            check=False)
    if result.returncode not in (0, 4, 9):  # 4: id in use, 9: name in use: look again
        raise CloudError(f"{argv[0]} failed: {result.stderr.decode(errors='replace').strip()[:200]}")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _kill_cgroup(cgroup: Path) -> None:
    try:
        pids = [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return
    for pid in pids:
        _kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            if not (cgroup / "cgroup.procs").read_text().strip():
                return
        except OSError:
            return
        time.sleep(0.02)


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _is_root() -> bool:
    return os.geteuid() == 0


def _login_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return getpass.getuser()


def _host_memory_mb(field: str = "MemTotal:") -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def _bounded_output(
    process: subprocess.Popen[bytes], argv: list[str], input: bytes | None, timeout: float, limit: int
) -> subprocess.CompletedProcess[bytes]:
    """``process``'s output read as it comes, never more than ``limit`` bytes a stream: a
    session's program that floods its output is killed, not read whole into visa's memory."""
    assert process.stdout is not None and process.stderr is not None
    kept = {process.stdout: bytearray(), process.stderr: bytearray()}
    deadline = time.monotonic() + timeout
    flooded = False
    with selectors.DefaultSelector() as selector:
        for stream in kept:
            selector.register(stream, selectors.EVENT_READ)
        if process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.write(input or b"")
            process.stdin.close()
        while selector.get_map() and not flooded:
            left = deadline - time.monotonic()
            if left <= 0:
                _kill_group(process)
                raise subprocess.TimeoutExpired(argv, timeout, bytes(kept[process.stdout]), bytes(kept[process.stderr]))
            for key, _ in selector.select(min(left, 1.0)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer = kept[key.fileobj]  # type: ignore[index]
                # Once flooded, stays so: the other stream's next small chunk must not clear it.
                flooded = flooded or len(buffer) + len(chunk) > limit
                buffer += chunk[: limit - len(buffer)]
    if flooded:
        _kill_group(process)
    try:
        returncode = process.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise subprocess.TimeoutExpired(argv, timeout, bytes(kept[process.stdout]), bytes(kept[process.stderr])) from None
    finally:
        process.stdout.close()
        process.stderr.close()
    return subprocess.CompletedProcess(argv, returncode, bytes(kept[process.stdout]), bytes(kept[process.stderr]))


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    process.wait()
