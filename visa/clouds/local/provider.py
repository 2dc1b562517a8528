"""The local provider: visa's embedded default cloud, one session on this machine per instance.

An instance is a directory ``<root_dir>/<instance uid>`` (``root_dir`` defaults to
``<data_dir>/local-instances``, mode 0700) holding its spec, status, logs and pid file, the
session's ``home`` and its ``run`` directory, and a supervisor process
(:mod:`~visa.clouds.local.supervisor`) that runs

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
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx
from pydantic import ValidationError

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
from visa.clouds.local import accounts, cgroups, directory, sandbox
from visa.clouds.local import supervisor as session
from visa.clouds.local.accounts import SANDBOX_HOME, Account, is_root
from visa.clouds.local.commands import EXEC_MAX_OUTPUT, SessionCommand, bounded_output, session_command
from visa.clouds.local.config import DEFAULT_PATH, OPTIONAL_PROGRAMS, PACKAGES, LocalConfig, default_root
from visa.clouds.local.record import Mount, SessionRecord
from visa.clouds.local.sandbox import Isolation
from visa.clouds.sftp import FileAccess, over_process
from visa.errors import CloudError, InvalidInput
from visa.settings import Settings
from visa.states import InstanceState

log = logging.getLogger(__name__)

_UID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
UNIX_PATH_MAX = 107


class LocalProvider(Provider):
    kind = "local"

    # Reported once per process, not at every create of every instance.
    _warned: ClassVar[set[str]] = set()
    _isolation_cache: ClassVar[dict[tuple[Any, ...], Isolation]] = {}

    def __init__(self, name: str, config: dict[str, Any], *, data_dir: Path | None = None) -> None:
        """``data_dir``: visa's data directory (its settings', given by :meth:`configured`): the
        sessions' root by default, and never shown to a session."""
        super().__init__(name, config)
        self.data_dir = Path(os.path.realpath(data_dir)) if data_dir is not None else None
        try:
            self.settings = LocalConfig.model_validate(config)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "config"
            raise InvalidInput(f"local cloud config {where}: {error['msg']}", field=where) from None
        cfg = self.settings
        root = cfg.root_dir
        if not root:
            if data_dir is None:
                raise InvalidInput("local cloud config root_dir: required when visa's data directory is not given",
                                   field="root_dir")
            root = str(default_root(data_dir))
        self.root = Path(root).resolve()
        # Programs are looked up here once and run by absolute path: whatever visa's own PATH
        # holds (a directory someone else may write) never runs as root or in a session.
        self.path = str(cfg.path or DEFAULT_PATH)
        self.vnc_server = cfg.vnc_server
        command = list(cfg.jupyter_command or [sys.executable, "-m", "jupyterlab"])
        self.jupyter_command = [self._program(command[0]), *command[1:]]
        self.video_python = self._program(cfg.video_python or sys.executable)
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
        return cls(name, config, data_dir=settings.data_dir)

    # ------------------------------------------------------------------ contract

    def create(self, spec: ServerSpec) -> Server:
        if not _UID_RE.match(spec.instance_uid):
            raise CloudError(f"instance uid {spec.instance_uid!r} cannot name a directory")
        existing = self.get(spec.instance_uid)
        if existing is not None:  # a repeated create: the scheduler may retry
            return existing
        isolation, tools = self._check_spec(spec)
        record, account = self._make_record(spec, isolation, tools)
        try:
            directory.stage(self.root, spec, record, account, path=self.path)
        except OSError as exc:
            raced = self.get(spec.instance_uid)
            if raced is not None:  # a concurrent create of the same instance won
                return raced
            raise CloudError(f"cannot prepare the session directory: {exc}") from exc
        final = self.root / spec.instance_uid
        self._launch(final)
        server = directory.server(final)
        assert server is not None
        return server

    def get(self, server_id: str) -> Server | None:
        if not _UID_RE.match(server_id):
            return None
        return directory.server(self.root / server_id)

    def list_servers(self) -> list[Server]:
        if not self.root.is_dir():
            return []
        servers = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith("."):
                continue
            server = directory.server(entry)
            if server is not None:
                servers.append(server)
        return servers

    def start(self, server_id: str) -> None:
        instance_dir = self._existing_dir(server_id)
        if directory.supervisor_of(instance_dir) is not None:
            return
        record = directory.existing_record(instance_dir)
        record = record.replace(
            tools=self._check_programs(record.protocols, self.isolation_report()),
            programs=self._programs(),
            session_log_max_bytes=self.settings.session_log_max_bytes,
            video_python=self._video(record.protocols),
        )
        session.write_record(instance_dir / session.INSTANCE_FILE, record)
        (instance_dir / session.STOPPED_FILE).unlink(missing_ok=True)
        # A supervisor killed from outside (OOM, kill -9) may leave its children behind.
        status = session.read_json(instance_dir / session.STATUS_FILE) or {}
        session.kill_session(instance_dir, status.get("pid_ns"), grace=1.0)
        directory.remove_stale_x_lock(instance_dir)
        self._launch(instance_dir)

    def stop(self, server_id: str) -> None:
        instance_dir = self.root / server_id
        if not _UID_RE.match(server_id) or not instance_dir.is_dir():
            return
        (instance_dir / session.STOPPED_FILE).touch()
        supervisor = directory.supervisor_of(instance_dir)
        if supervisor is not None:
            pid, start = supervisor
            _kill(pid, signal.SIGTERM)  # it tears the session down and says so in status.json
            deadline = time.monotonic() + self.stop_timeout
            while session.pid_alive(pid, start) and time.monotonic() < deadline:
                time.sleep(0.05)
        # Whatever outlived the supervisor (or a supervisor killed with -9) goes now.
        status = session.read_json(instance_dir / session.STATUS_FILE) or {}
        session.kill_session(instance_dir, status.get("pid_ns"), grace=1.0)
        cgroups.remove(self.settings.cgroup_root, server_id)
        directory.remove_stale_x_lock(instance_dir)

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
        record = directory.existing_record(instance_dir)
        if (record.screen_width, record.screen_height, record.keyboard_layout) == (width, height, keyboard_layout):
            return
        record = record.replace(screen_width=width, screen_height=height, keyboard_layout=keyboard_layout)
        session.write_record(instance_dir / session.INSTANCE_FILE, record)
        if "VNC" not in record.protocols or directory.supervisor_of(instance_dir) is None:
            return
        if not record.tools.get("setxkbmap"):
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
        report = sandbox.isolation(cfg, isolate=self.isolate, path=self.path)
        self._isolation_cache[key] = report
        if report.reasons:
            self._warn_once("local cloud: " + report.summary())
        return report

    def account_name(self, username: str) -> str:
        """The unix name proposed for ``username``'s account (see ``accounts.account_name``)."""
        return accounts.account_name(self.settings.account_prefix, username)

    def new_account(
        self, username: str, uid: int | None, taken_uids: Collection[int], taken_gids: Collection[int] = ()
    ) -> tuple[str, int] | None:
        """The account to record for a user who has none (see ``accounts.new_account``); None
        where sessions do not run as accounts of their own."""
        if not self.isolation_report().accounts:
            return None
        return accounts.new_account(
            username, uid, taken_uids, taken_gids, prefix=self.settings.account_prefix,
            uid_range=self.settings.uid_range,
        )  # fmt: skip

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
        return bounded_output(process, argv, input, timeout, max_output)

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
        record = directory.existing_record(instance_dir)
        sandboxed = record.isolation == "sandbox"
        if not sandboxed and is_root():
            raise CloudError("file transfers need the session's sandbox: this session would run them as root")
        cmd = self._session_command(server_id, [self.sftp_server, "-e", "-l", "ERROR"])
        if sandboxed:
            assert record.home is not None  # a sandboxed session's record names it
            roots = (record.home, *(m.target for m in record.mounts if not m.read_only))
        else:
            roots = (str(instance_dir / session.HOME_DIR),)
        try:
            access = over_process(cmd.argv, roots, env=cmd.env, cwd=cmd.cwd, pass_fds=cmd.fds,
                                  preexec_fn=cmd.preexec)
        finally:
            cmd.close()
        return access

    # The session's own plumbing: its CPU is not the user's computation.
    _PLUMBING = frozenset({"Xtigervnc", "Xvfb", "x11vnc", "openbox", "xsetroot", "setxkbmap", "bwrap", "cupsd",
                           "visa-video"})

    def activity_report(self, server_id: str) -> dict[str, Any] | None:
        """Activity without SSH: X idle time through the session, CPU of its processes from /proc."""
        instance_dir = self._existing_dir(server_id)
        supervisor = directory.supervisor_of(instance_dir)
        if supervisor is None:
            return None
        record = directory.existing_record(instance_dir)
        status = session.read_json(instance_dir / session.STATUS_FILE) or {}
        x_idle = None
        if "VNC" in record.protocols:
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
                "processes": processes, "gpu": self._gpu_report(),
                "kernels": self._kernels(instance_dir, record) if "JUPYTER" in record.protocols else None}

    # What the probe reads of nvidia-smi and of JupyterLab, at most (its parser reads less).
    _REPORT_MAX_BYTES = 128 * 1024

    def _gpu_report(self) -> dict[str, str] | None:
        """The host's ``nvidia-smi`` as printed (the same queries as the probe in a VM). Its pids
        are the host's, those of every session: the probe counts only this session's."""
        program = shutil.which("nvidia-smi")
        if program is None:
            return None
        found = {}
        for key, query in (("apps", "--query-compute-apps=pid,used_memory"), ("utilization", "--query-gpu=utilization.gpu")):
            argv = [program, query, "--format=csv,noheader,nounits"]
            try:
                process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, start_new_session=True)
                out = bounded_output(process, argv, None, 10, self._REPORT_MAX_BYTES)
            except (OSError, subprocess.SubprocessError):
                found[key] = ""
                continue
            found[key] = out.stdout.decode(errors="replace") if out.returncode == 0 else ""
        return found

    def _kernels(self, instance_dir: Path, record: SessionRecord) -> Any:
        """The session's JupyterLab's ``GET /api/kernels``, as it answered (None: no answer).

        The session owns its run directory: its secret is read only from a regular file of one
        link, never through a link the session could point at a file of the host's."""
        try:
            fd = os.open(instance_dir / session.RUN_DIR / session.SECRET_FILE, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as fh:
                info = os.fstat(fh.fileno())
                if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_size > 4096:
                    return None
                token = fh.read(4096).decode().strip()
            transport = httpx.HTTPTransport(uds=str(instance_dir / session.SOCKETS_DIR / session.SOCKETS["JUPYTER"]))
            with httpx.Client(transport=transport, base_url="http://session", timeout=5) as client, client.stream(
                "GET", f"/jupyter/{record.instance_uid}/api/kernels", headers={"Authorization": f"token {token}"}
            ) as answer:
                if answer.status_code != 200:
                    return None
                body = bytearray()
                for chunk in answer.iter_bytes():
                    body += chunk
                    if len(body) > self._REPORT_MAX_BYTES:
                        return None
            return json.loads(body)
        except (OSError, ValueError, httpx.HTTPError):
            return None

    def instance_dir(self, server_id: str) -> Path:
        return self.root / server_id

    # ------------------------------------------------------------------ create's steps

    def _check_spec(self, spec: ServerSpec) -> tuple[Isolation, dict[str, bool]]:
        """What this machine enforces and which optional tools it has, once the spec is one it
        can serve here (else a CloudError saying why)."""
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
        return isolation, tools

    def _make_record(
        self, spec: ServerSpec, isolation: Isolation, tools: dict[str, bool]
    ) -> tuple[SessionRecord, Account | None]:
        """The session's record, once the host is ready for it: the owner's unix account (made
        if missing), their home and the data directories checked (and made where writable)."""
        account = accounts.owner_account(spec, self.root, self.path) if isolation.accounts else None
        # A machine others act in gets the instance's own home (made when staged), never the owner's.
        home_dir = None if spec.own_home else accounts.home_dir(spec, account, self.root, self.settings.account_prefix)
        for mount in spec.mounts:
            sandbox.prepare_data_dir(mount.source, writable=not mount.read_only, account=account)
        mount_mode = "sandbox" if isolation.mode == "sandbox" else ("symlinks" if spec.mounts else "none")
        limitations = list(isolation.reasons)
        if mount_mode == "symlinks":
            limitations.append("not isolated: data are symlinks under the instance directory, not read-only")
        session_account = accounts.sandbox_account(account) if isolation.mode == "sandbox" else None
        record = SessionRecord(
            name=spec.name,
            instance_uid=spec.instance_uid,
            created_at=datetime.now(UTC).isoformat(),
            protocols=dict(spec.protocols),
            screen_width=spec.screen_width,
            screen_height=spec.screen_height,
            keyboard_layout=spec.keyboard_layout,
            owner_username=spec.owner_username,
            home_dir=str(home_dir) if home_dir is not None else None,
            cores=spec.cores,
            memory_mb=spec.memory_mb,
            metadata=dict(spec.metadata),
            mounts=[Mount(m.source, m.target, m.read_only) for m in spec.mounts],
            isolation=isolation.mode,
            mount_mode=mount_mode,
            limitations=limitations,
            vnc_server=self.vnc_server,
            path=self.path,
            programs=self._programs(),
            tools=tools,
            video_python=self._video(spec.protocols),
            session_log_max_bytes=self.settings.session_log_max_bytes,
            jupyter_command=self.jupyter_command,
            jupyter_allow_origin=self.jupyter_allow_origin,
            jupyter_cull_idle_seconds=spec.jupyter_cull_idle_seconds,
            jupyter_cull_interval_seconds=spec.jupyter_cull_interval_seconds,
            jupyter_cull_connected=spec.jupyter_cull_connected,
            network=self.settings.network if isolation.mode == "sandbox" else "host",
            account=session_account,
            home=f"{SANDBOX_HOME}/{session_account.name}" if session_account is not None else None,
        )
        return record, account

    def _launch(self, instance_dir: Path) -> None:
        directory.launch(
            instance_dir, directory.existing_record(instance_dir), self.settings, path=self.path,
            software_paths=self._software_paths, enforce_cgroups=self.isolation_report().cgroups,
        )  # fmt: skip

    # ------------------------------------------------------------------ internals

    def _allotted(self) -> tuple[int, int, int]:
        """Sessions that hold resources, and the cores and memory their flavours give them."""
        used_instances = used_cores = used_memory = 0
        for server in self.list_servers():
            if server.state in (InstanceState.STOPPED, InstanceState.ERROR):
                continue
            record = directory.existing_record(self.root / server.id)
            used_instances += 1
            used_cores += record.cores
            used_memory += record.memory_mb
        return used_instances, used_cores, used_memory

    def _session_command(self, server_id: str, argv: list[str]) -> SessionCommand:
        """``argv`` made to run inside a running session: see ``exec_in_session``."""
        instance_dir = self._existing_dir(server_id)
        if directory.supervisor_of(instance_dir) is None:
            raise CloudError(f"session {server_id} is not running")
        record = directory.existing_record(instance_dir)
        status = session.read_json(instance_dir / session.STATUS_FILE) or {}
        return session_command(instance_dir, record, status, argv, path=self.path)

    def _software_paths(self) -> list[str]:
        """The host directories sessions see read-only besides /usr (see ``sandbox.software_paths``)."""
        return sandbox.software_paths(self.settings, self.jupyter_command[0], root=self.root, data_dir=self.data_dir,
                                      video_program=self.video_python if self.settings.video else None)

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
            required += ["bwrap", "nsenter"] + (["setpriv"] if is_root() else [])
            if self.settings.network == "outside":
                required += ["slirp4netns"] + (["unshare", "iptables-restore"] if is_root() else [])
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

    # Pythons found able to run the video proxy (probed once per process: an import check costs).
    _video_ok: ClassVar[dict[str, bool]] = {}

    def _video(self, protocols: dict[str, int]) -> str | None:
        """The Python that runs a desktop's video proxy, or None: no video for this session
        (turned off, no desktop, or that Python lacks what the proxy imports: warned once)."""
        if not self.settings.video or "VNC" not in protocols:
            return None
        python = self.video_python
        ok = self._video_ok.get(python)
        if ok is None:
            probe = "import importlib.util as u, sys; sys.exit(not all(map(u.find_spec, ('av', 'numpy', 'cryptography'))))"
            try:
                ok = subprocess.run([python, "-I", "-c", probe], capture_output=True, check=False,
                                    timeout=30).returncode == 0  # fmt: skip
            except (OSError, subprocess.SubprocessError):
                ok = False
            self._video_ok[python] = ok
        if not ok:
            self._warn_once(f"desktops send no video: {python} lacks PyAV, NumPy or cryptography "
                            "(`pip install 'visa[local]'`, or the cloud's video_python)")  # fmt: skip
            return None
        return python

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



def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _host_memory_mb(field: str = "MemTotal:") -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None
