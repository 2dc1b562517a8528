"""The local provider: visa's embedded default cloud, one session on this machine per instance.

An instance is a directory ``<root_dir>/<instance uid>`` (``root_dir`` defaults to
``<data_dir>/local-instances``) holding its spec, secret, home, logs and pid file, and a
supervisor process (:mod:`visa.clouds.local_session`) that runs

* a desktop when the spec asks for ``VNC``: TigerVNC's ``Xtigervnc`` (X and VNC server in
  one, VncAuth with the instance secret) or ``Xvfb`` + ``x11vnc``, openbox and an xterm;
* JupyterLab when it asks for ``JUPYTER``, under ``/jupyter/<uid>/`` with the secret as token;

each on a free loopback port, reported in ``Server.ports``. When visa runs as root the
session lives in a private mount namespace, where the experiment data are bind-mounted at
the targets a VM would have (read-only unless the mount says otherwise); elsewhere they are
symlinks under the instance directory, and ``provider_state`` says so.

Everything the provider knows is on disk, so a restarted visa lists, stops and deletes the
sessions an earlier one started. States: supervisor starting -> BUILDING, ports answering
-> ACTIVE, stopped by us or by a reboot of the host -> STOPPED, anything else that ended ->
ERROR with the fault.

Config keys (the Cloud row's config): ``root_dir``, ``path`` (PATH for the session and for
finding its programs), ``vnc_server`` (``tigervnc`` or ``x11vnc``), ``isolate_mounts``
(default true), ``jupyter_command`` (argv, default this Python's ``-m jupyterlab``),
``jupyter_allow_origin`` (default ``*``: the token guards it, the port is loopback only),
``max_instances``, ``stop_timeout`` (seconds, default 5).

Limits: the session runs as visa's own user, and the flavour's cores and memory are
accounted in :meth:`LocalProvider.limits` but not enforced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from visa.clouds import local_session as session
from visa.clouds.base import CloudLimits, Provider, Server, ServerSpec
from visa.errors import CloudError, InvalidInput
from visa.instances.models import InstanceState

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
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "mount": "mount",
}
# Nice to have: the session starts without them, with a warning.
OPTIONAL_PROGRAMS = ("xsetroot", "setxkbmap")
_UID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class LocalProvider(Provider):
    kind = "local"

    # Reported once per process, not at every create of every instance.
    _warned: ClassVar[set[str]] = set()

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        super().__init__(name, config)
        root = config.get("root_dir")
        if not root:
            from visa.settings import get_settings

            root = get_settings().data_dir / "local-instances"
        self.root = Path(root).resolve()
        self.path = str(config.get("path") or os.environ.get("PATH") or DEFAULT_PATH)
        self.vnc_server = str(config.get("vnc_server", "tigervnc"))
        if self.vnc_server not in ("tigervnc", "x11vnc"):
            raise InvalidInput("vnc_server must be tigervnc or x11vnc", field="vnc_server")
        self.jupyter_command = list(config.get("jupyter_command") or [sys.executable, "-m", "jupyterlab"])
        self.jupyter_allow_origin = str(config.get("jupyter_allow_origin", "*"))
        self.stop_timeout = float(config.get("stop_timeout", 5))
        self.max_instances = config.get("max_instances")
        self.isolate = bool(config.get("isolate_mounts", True))
        self._namespace_ok: bool | None = None

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
        tools = self._check_programs(spec.protocols)
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
            ):
                raise CloudError(f"mount target {mount.target!r} must be a normalised absolute path below /")
            if not mount.read_only:
                # A processed-data area is made on first use, as the facility's storage would.
                Path(mount.source).mkdir(parents=True, exist_ok=True)
            if not Path(mount.source).is_dir():
                raise CloudError(f"data directory {mount.source} does not exist on this host")
        mount_mode, limitation = self._mount_mode(spec)

        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".creating-{spec.instance_uid}-{secrets.token_hex(4)}"
        staging.mkdir(mode=0o700)
        try:
            final = self.root / spec.instance_uid
            (staging / session.HOME_DIR).mkdir()
            self._write_secret(staging, spec.secret, "VNC" in spec.protocols)
            session.write_xauthority(staging / session.XAUTHORITY_FILE, secrets.token_bytes(16))
            created_dirs = self._prepare_mounts(staging, final, spec, mount_mode)
            record = {
                "name": spec.name,
                "instance_uid": spec.instance_uid,
                "created_at": datetime.now(UTC).isoformat(),
                "protocols": dict(spec.protocols),
                "ports": {protocol: _free_port() for protocol in spec.protocols},
                "screen_width": spec.screen_width,
                "screen_height": spec.screen_height,
                "keyboard_layout": spec.keyboard_layout,
                "owner_username": spec.owner_username,
                "cores": spec.cores,
                "memory_mb": spec.memory_mb,
                "metadata": dict(spec.metadata),
                "mounts": [
                    {"source": m.source, "target": m.target, "read_only": m.read_only} for m in spec.mounts
                ],
                "mount_mode": mount_mode,
                "limitations": [limitation] if limitation else [],
                "created_dirs": created_dirs,
                "vnc_server": self.vnc_server,
                "path": self.path,
                "tools": tools,
                "jupyter_command": self.jupyter_command,
                "jupyter_allow_origin": self.jupyter_allow_origin,
            }
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
        record["tools"] = self._check_programs(record["protocols"])
        # Another program may have taken a port while the session was stopped.
        for protocol, port in record["ports"].items():
            if not _port_free(port):
                record["ports"][protocol] = _free_port()
        session.write_json(instance_dir / session.INSTANCE_FILE, record)
        (instance_dir / session.STOPPED_FILE).unlink(missing_ok=True)
        # A supervisor killed from outside (OOM, kill -9) may leave its children holding the ports.
        session.kill_session(instance_dir, None, grace=1.0)
        self._remove_stale_x_lock(instance_dir)
        self._launch(instance_dir)

    def stop(self, server_id: str) -> None:
        instance_dir = self.root / server_id
        if not _UID_RE.match(server_id) or not instance_dir.is_dir():
            return
        (instance_dir / session.STOPPED_FILE).touch()
        supervisor = self._supervisor(instance_dir)
        mnt_ns = _mnt_ns(supervisor[0]) if supervisor else None
        if supervisor is not None:
            pid, start = supervisor
            _kill(pid, signal.SIGTERM)  # it tears the session down and says so in status.json
            deadline = time.monotonic() + self.stop_timeout
            while session.pid_alive(pid, start) and time.monotonic() < deadline:
                time.sleep(0.05)
        # Whatever outlived the supervisor (or a supervisor killed with -9) goes now.
        session.kill_session(instance_dir, mnt_ns, grace=1.0)
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
        record = self._record(instance_dir)
        shutil.rmtree(instance_dir, ignore_errors=True)
        self._remove_created_dirs(record.get("created_dirs", []))

    def limits(self) -> CloudLimits:
        used_instances = used_cores = used_memory = 0
        for server in self.list_servers():
            if server.state in (InstanceState.STOPPED, InstanceState.ERROR):
                continue
            record = self._record(self.root / server.id)
            used_instances += 1
            used_cores += int(record.get("cores", 0))
            used_memory += int(record.get("memory_mb", 0))
        return CloudLimits(
            max_instances=int(self.max_instances) if self.max_instances is not None else None,
            max_cores=os.cpu_count(),
            max_memory_mb=_host_memory_mb(),
            used_instances=used_instances,
            used_cores=used_cores,
            used_memory_mb=used_memory,
        )

    # ------------------------------------------------------------------ helpers for callers and tests

    def exec_in_session(
        self, server_id: str, argv: list[str], *, timeout: float = 30, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a command as part of a running session: in its mount namespace, with its
        DISPLAY and HOME (activity probes such as ``xprintidle`` use this too)."""
        instance_dir = self._existing_dir(server_id)
        supervisor = self._supervisor(instance_dir)
        if supervisor is None:
            raise CloudError(f"session {server_id} is not running")
        record = self._record(instance_dir)
        status = session.read_json(instance_dir / session.STATUS_FILE) or {}
        env = {
            "PATH": self.path,
            "HOME": str(instance_dir / session.HOME_DIR),
            "XAUTHORITY": str(instance_dir / session.XAUTHORITY_FILE),
            session.MARKER_ENV: str(instance_dir),
        }
        if status.get("display") is not None:
            env["DISPLAY"] = f":{status['display']}"
        if record["mount_mode"] == "namespace":
            argv = ["nsenter", f"--target={supervisor[0]}", "--mount", "--", *argv]
        return subprocess.run(
            argv, env=env, cwd=env["HOME"], capture_output=True, timeout=timeout, input=input, check=False
        )

    # The session's own plumbing: its CPU is not the user's computation.
    _PLUMBING = frozenset({"Xtigervnc", "Xvfb", "x11vnc", "openbox", "xsetroot", "setxkbmap"})

    def activity_report(self, server_id: str) -> dict[str, Any] | None:
        """Activity without SSH: X idle time through the session, CPU of its processes from /proc."""
        instance_dir = self._existing_dir(server_id)
        supervisor = self._supervisor(instance_dir)
        if supervisor is None:
            return None
        record = self._record(instance_dir)
        x_idle = None
        if "VNC" in (record.get("protocols") or {}):
            out = self.exec_in_session(server_id, ["xprintidle"], timeout=5)
            if out.returncode == 0 and out.stdout.strip().isdigit():
                x_idle = int(out.stdout.strip())
        mnt_ns = _mnt_ns(supervisor[0]) if record.get("mount_mode") == "namespace" else None
        tick = os.sysconf("SC_CLK_TCK")
        processes = []
        for pid in session.session_pids(instance_dir, mnt_ns):
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
        return Server(
            id=instance_dir.name,
            name=record["name"],
            state=state,
            address="127.0.0.1",
            ports=dict(record["ports"]),
            instance_uid=record["instance_uid"],
            fault=fault,
            created_at=datetime.fromisoformat(created) if created else None,
            provider_state={
                "dir": str(instance_dir),
                "display": status.get("display"),
                "mount_mode": record["mount_mode"],
                "limitations": record.get("limitations", []),
                "vnc_server": record.get("vnc_server"),
            },
        )

    def _launch(self, instance_dir: Path) -> None:
        """Start the supervisor; it forks away, so this waits only for its first half."""
        record = self._record(instance_dir)
        argv = [sys.executable, "-I", session.__file__, str(instance_dir)]
        if record["mount_mode"] == "namespace":
            argv = ["unshare", "--mount", "--propagation", "private", "--", *argv]
        (instance_dir / session.PID_FILE).unlink(missing_ok=True)
        (instance_dir / session.STATUS_FILE).unlink(missing_ok=True)
        env = {
            "PATH": self.path,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            session.MARKER_ENV: str(instance_dir),
        }
        with open(instance_dir / session.LOG_FILE, "ab") as log_file:
            result = subprocess.run(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                timeout=30,
                check=False,
            )
        if result.returncode or not (instance_dir / session.PID_FILE).exists():
            raise CloudError(
                f"the session of {instance_dir.name} did not start (exit {result.returncode}); "
                f"see {instance_dir / session.LOG_FILE}"
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

    def _check_programs(self, protocols: dict[str, int]) -> dict[str, bool]:
        """Which optional tools exist; a missing required one is a CloudError naming the
        package to install, and a warning logged once."""
        required: list[str] = []
        if "VNC" in protocols:
            required += ["Xtigervnc", "vncpasswd"] if self.vnc_server == "tigervnc" else ["Xvfb", "x11vnc"]
            required += ["openbox", "xterm"]
        if self.isolate and _is_root():
            required += ["unshare", "nsenter", "mount"]
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

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)

    def _mount_mode(self, spec: ServerSpec) -> tuple[str, str | None]:
        if not spec.mounts:
            return "none", None
        if not self.isolate:
            return (
                "symlinks",
                "mount isolation is off: data are symlinks under the instance directory, not read-only",
            )
        if not _is_root():
            return "symlinks", "not root: data are symlinks under the instance directory, not read-only"
        if not self._namespace_works():
            return "symlinks", "mount namespaces unavailable: data are symlinks, not read-only"
        return "namespace", None

    def _namespace_works(self) -> bool:
        if self._namespace_ok is None:
            try:
                probe = subprocess.run(
                    ["unshare", "--mount", "--propagation", "private", "true"],
                    env={"PATH": self.path},
                    capture_output=True,
                    timeout=10,
                    check=False,
                )
                self._namespace_ok = probe.returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                self._namespace_ok = False
            if not self._namespace_ok:
                self._warn_once("unshare --mount failed: local sessions see their data through symlinks")
        return self._namespace_ok

    def _prepare_mounts(self, staging: Path, final: Path, spec: ServerSpec, mode: str) -> list[str]:
        """Mount points for the namespace (made on the host: returns those we created, to
        remove on delete), or the symlinks of the fallback."""
        created: list[str] = []
        for mount in spec.mounts:
            if mode == "namespace":
                missing = []
                path = Path(mount.target)
                while not path.exists():
                    missing.append(str(path))
                    path = path.parent
                Path(mount.target).mkdir(parents=True, exist_ok=True)
                created += [p for p in reversed(missing) if p not in created]
            else:
                link = staging / session.SYMLINK_DIR / mount.target.lstrip("/")
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(mount.source)
        return created

    def _remove_created_dirs(self, created: list[str]) -> None:
        """Remove the empty mount points we made, unless another instance still uses them:
        removing a directory that is a mount point elsewhere would detach that mount."""
        in_use: set[str] = set()
        for entry in self.root.iterdir() if self.root.is_dir() else []:
            other = session.read_json(entry / session.INSTANCE_FILE) or {}
            in_use.update(other.get("created_dirs", []))
            in_use.update(m["target"] for m in other.get("mounts", []))
        for path in sorted(created, key=len, reverse=True):
            if path in in_use or any(p.startswith(path + "/") for p in in_use):
                continue
            with contextlib.suppress(OSError):
                os.rmdir(path)

    def _write_secret(self, instance_dir: Path, secret: str, vnc: bool) -> None:
        fd = os.open(instance_dir / session.SECRET_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secret)
        if not vnc:
            return
        # VncAuth uses the first 8 characters only; vncpasswd -f obfuscates them for the server.
        result = subprocess.run(
            ["vncpasswd", "-f"],
            input=(secret + "\n").encode(),
            capture_output=True,
            env={"PATH": self.path},
            check=False,
            timeout=10,
        )
        if result.returncode or len(result.stdout) != 8:
            raise CloudError(f"vncpasswd failed: {result.stderr.decode(errors='replace').strip()}")
        fd = os.open(instance_dir / session.VNC_PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(result.stdout)

    def _remove_stale_x_lock(self, instance_dir: Path) -> None:
        """An X server killed with -9 leaves its lock and socket behind."""
        status = session.read_json(instance_dir / session.STATUS_FILE) or {}
        display = status.get("display")
        if display is None:
            return
        lock = Path(f"/tmp/.X{display}-lock")
        try:
            pid = int(lock.read_text().strip())
        except (OSError, ValueError):
            return
        if not session.pid_alive(pid):
            lock.unlink(missing_ok=True)
            Path(f"/tmp/.X11-unix/X{display}").unlink(missing_ok=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _mnt_ns(pid: int) -> str | None:
    """The session's mount namespace, when it is not ours (then it names every process of it)."""
    try:
        theirs = os.readlink(f"/proc/{pid}/ns/mnt")
        return theirs if theirs != os.readlink("/proc/self/ns/mnt") else None
    except OSError:
        return None


def _is_root() -> bool:
    return os.geteuid() == 0


def _host_memory_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None
