"""The supervisor of one local session, and the session itself: run as a script.

The local provider starts ``python supervisor.py <instance dir>``. The script forks once
so the supervisor is no child of the visa process (a restarted visa must not matter, and no
zombie is left behind), writes its pid, and then

* in a sandbox (``isolation`` ``sandbox``): puts ``bwrap`` in the session's cgroups and runs
  this same script inside it (``--inside``) as the session's unix account, where it starts
  the desktop and JupyterLab; the supervisor stays outside, as visa's user, and watches;
* without (``isolation`` ``none``, the operator's own sessions only): starts them itself.

Either way the desktop and JupyterLab listen on unix sockets in the session's ``run``
directory, never on TCP, and

* ``status.json`` says ``starting`` until every socket answers, then ``running``;
* a critical process (the sandbox, X/VNC server, JupyterLab) that exits is a fault: the
  supervisor tears the session down and records ``failed`` with the reason;
* SIGTERM (from ``stop``) tears the session down and records ``stopped``.

Stdlib only and importable, so the provider shares the file names and helpers below
without the script paying for visa's imports at every start. Run as a script, it loads the
session's record module from the file beside it (``record.py``; in the sandbox both are bound
under ``/run/visa-session/``), never from visa's package.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import os
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any


def _beside(name: str) -> types.ModuleType:
    """The module ``<name>.py`` of this script's own directory, loaded without visa's package."""
    spec = importlib.util.spec_from_file_location(f"visa_session_{name}", Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING or __package__:  # imported, as visa.clouds.local.supervisor
    from visa.clouds.local import printer
    from visa.clouds.local import record as records
else:  # run as a script
    records = _beside("record")
    printer = _beside("printer")

INSTANCE_FILE = "instance.json"
STATUS_FILE = "status.json"
PID_FILE = "supervisor.pid"
STOPPED_FILE = "stopped"
# What the session's programs print, through a pipe the supervisor copies, capped.
LOG_FILE = "session.log"
# The supervisor's own notes (host paths, the sandbox's options): 0600, never open in the session.
SUPERVISOR_LOG = "supervisor.log"
DEFAULT_LOG_MAX_BYTES = records.DEFAULT_LOG_MAX_BYTES
HOME_DIR = "home"
SYMLINK_DIR = "mounts"
# The session's own directory (its account owns it): secrets it needs, its sockets.
RUN_DIR = "run"
SECRET_FILE = "secret"
VNC_PASSWORD_FILE = "vncpasswd"
XAUTHORITY_FILE = "Xauthority"
DISPLAY_FILE = "display"
FAULT_FILE = "fault"
INSIDE_FILE = "session.json"
# The seccomp filter (visa.clouds.seccomp) every process of a sandboxed session runs under.
SECCOMP_FILE = "seccomp.bpf"
SOCKETS = {"VNC": "vnc.sock", "JUPYTER": "jupyter.sock"}
# With the video proxy, the VNC server's own socket: only the proxy, beside it, connects there.
VNC_SERVER_SOCKET = "vnc-server.sock"
# visa's links to the session's sockets, in a directory the session never sees.
SOCKETS_DIR = "sockets"
# Where the sandbox sees the run directory, this script and the record module beside it.
SANDBOX_RUN = "/run/visa"
SANDBOX_SCRIPT = "/run/visa-session/supervisor.py"
SANDBOX_RECORD = "/run/visa-session/record.py"
SANDBOX_PRINTER = "/run/visa-session/printer.py"
SANDBOX_VIDEOPROXY = "/run/visa-session/videoproxy.py"
# Every process of a session inherits this variable: how stop finds kernels and shells
# that left the supervisor's process group (without a sandbox; with one, its pid namespace).
MARKER_ENV = "VISA_LOCAL_SESSION"

READY_TIMEOUT = 60.0
TEARDOWN_GRACE = 3.0


# ---------------------------------------------------------------- helpers shared with the provider


def write_json(path: Path, data: dict[str, Any], mode: int = 0o600) -> None:
    """Atomic write, so a reader never sees half a file."""
    _write_atomic(path, json.dumps(data, indent=1, sort_keys=True), mode)


def write_record(path: Path, record: records.SessionRecord, mode: int = 0o600) -> None:
    """A session's record (``instance.json``, ``session.json``), written atomically."""
    _write_atomic(path, record.to_json(), mode)


def _write_atomic(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # never write through whatever another left there
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def open_log(path: Path) -> int:
    """An append descriptor on a log only visa's user may read (created 0600, never through a link)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)  # a log of an older visa was 0644
    return fd


class UnsafePath(OSError):
    """A data directory reached through a symbolic link (or a component that is no directory)."""


def open_dir(path: str, *, create: bool = False) -> tuple[int, bool]:
    """An ``O_PATH`` descriptor on the directory ``path``, walked one component at a time from
    ``/`` without following a symbolic link anywhere: a link planted by whoever may write a
    parent (a proposal's members) never leads root elsewhere. With ``create``, missing
    components are made (``mkdirat``). Returns the descriptor and whether the last component
    was made now. Raises ``UnsafePath``, ``FileNotFoundError`` or another ``OSError``."""
    if not path.startswith("/") or os.path.normpath(path) != path:
        raise UnsafePath(errno.EINVAL, "not a normalised absolute path", path)
    flags = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open("/", flags)
    made = False
    walked = ""
    try:
        for name in [part for part in path.split("/") if part]:
            walked += "/" + name
            made = False
            try:
                child = os.open(name, flags, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise FileNotFoundError(errno.ENOENT, "does not exist", walked) from None
                with contextlib.suppress(FileExistsError):  # made meanwhile: opened below, never ours
                    os.mkdir(name, 0o777, dir_fd=fd)
                    made = True
                child = _open_component(name, fd, flags, walked)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                child = _open_component(name, fd, flags, walked)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd, made


def _open_component(name: str, parent: int, flags: int, walked: str) -> int:
    try:
        return os.open(name, flags, dir_fd=parent)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        link = stat.S_ISLNK(os.lstat(name, dir_fd=parent).st_mode)
        what = "is a symbolic link" if link else "is not a directory"
        raise UnsafePath(exc.errno, what, walked) from None


def describe(exc: OSError) -> str:
    """``open_dir``'s refusal in words: which path, what is wrong with it."""
    return f"{exc.filename} {exc.strerror}" if exc.filename else str(exc.strerror or exc)


def grant_made_dir(fd: int, uid: int, gid: int) -> None:
    """Give a directory visa has just made (``fd`` from ``open_dir``) to the session's account:
    through the descriptor, and only while it is still root's own (never one that existed)."""
    # fchown refuses an O_PATH descriptor: reopen what it names, the same inode.
    readable = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        info = os.fstat(readable)
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid():
            os.fchown(readable, uid, gid)
    finally:
        os.close(readable)


class CappedLog:
    """A log file that never grows past ``max_bytes``: at the bound it becomes ``<name>.1``
    (the one before is dropped) and a new one starts, so a session that prints without end
    takes at most twice the bound of the disk that holds visa's data."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.fd = open_log(path)
        self.size = os.fstat(self.fd).st_size

    def write(self, data: bytes) -> None:
        while data:
            if self.size >= self.max_bytes:
                self._rotate()
            chunk = data[: self.max_bytes - self.size]
            os.write(self.fd, chunk)
            self.size += len(chunk)
            data = data[len(chunk) :]

    def _rotate(self) -> None:
        os.close(self.fd)
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self.fd = open_log(self.path)
        self.size = 0

    def copy_from(self, read_fd: int) -> None:
        """Copy what comes down a pipe until every writer has closed it (run in a thread)."""
        while chunk := os.read(read_fd, 65536):
            self.write(chunk)
        os.close(read_fd)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def proc_start_time(pid: int) -> int | None:
    """Start time of a live (non-zombie) process, which tells a reused pid from ours."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ")".
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def pid_alive(pid: int, start_time: int | None = None) -> bool:
    current = proc_start_time(pid)
    return current is not None and (start_time is None or current == start_time)


def read_pid_file(instance_dir: Path) -> tuple[int, int] | None:
    try:
        pid, start = (instance_dir / PID_FILE).read_text().split()
        return int(pid), int(start)
    except (OSError, ValueError):
        return None


def session_pids(instance_dir: Path, pid_ns: str | None = None) -> list[int]:
    """Every live process of the session: in its pid namespace (a sandbox's processes cannot
    leave it), or carrying its marker (a session without one)."""
    marker = f"{MARKER_ENV}={instance_dir}".encode()
    own = os.getpid()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        pid = int(entry.name)
        try:
            if pid_ns and os.readlink(f"/proc/{pid}/ns/pid") == pid_ns:
                found.append(pid)
                continue
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(pid)
        except OSError:
            continue
    return [pid for pid in found if pid_alive(pid)]


def pid_ns_of(pid: int) -> str | None:
    """A process's pid namespace, when it is not ours (a sandbox's)."""
    try:
        theirs = os.readlink(f"/proc/{pid}/ns/pid")
        return theirs if theirs != os.readlink("/proc/self/ns/pid") else None
    except OSError:
        return None


def kill_session(instance_dir: Path, pid_ns: str | None, grace: float) -> None:
    """SIGTERM every process of the session, then SIGKILL what is left after ``grace``."""
    pids = session_pids(instance_dir, pid_ns)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = [pid for pid in pids if pid_alive(pid)]
    for pid in session_pids(instance_dir, pid_ns):
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def boot_id() -> str:
    """Changes at every boot of the host: a session of an earlier boot was powered off, not crashed."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def socket_open(path: str, timeout: float = 0.5) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            return True
    except OSError:
        return False


def write_xauthority(path: Path, cookie: bytes) -> None:
    """One MIT-MAGIC-COOKIE-1 entry of family Wild: good for any display number, which
    the X server picks itself (-displayfd), so the file is ready before it starts."""

    def field(value: bytes) -> bytes:
        return struct.pack(">H", len(value)) + value

    entry = struct.pack(">H", 0xFFFF) + field(b"") + field(b"") + field(b"MIT-MAGIC-COOKIE-1") + field(cookie)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(entry)


def xkb_layout(keyboard_layout: str) -> tuple[str, str]:
    """visa's layout names (``en-us``, ``fr-ch-qwertz``) or a plain XKB one (``us``) to
    (layout, variant): the country names the layout, Swiss French is a variant."""
    parts = keyboard_layout.lower().split("-")
    if len(parts) == 1:
        return parts[0], ""
    lang, country = parts[0], parts[1]
    if country == "ch" and lang == "fr":
        return "ch", "fr"
    return country, ""


def read_session_file(path: Path, limit: int) -> str:
    """A small file the session wrote: never through a symlink, never blocking on a FIFO
    it put there; '' if it is not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return os.read(fd, limit).decode(errors="replace")
    finally:
        os.close(fd)


def read_display(run_dir: Path) -> int | None:
    """The display number the session wrote (its own file: parse, never trust)."""
    text = read_session_file(run_dir / DISPLAY_FILE, 8).strip()
    return int(text) if text.isdigit() else None


def publish_socket(run_dir: Path, sockets_dir: Path, name: str, uid: int) -> bool:
    """Hard-link the socket the session made in its ``run`` directory into visa's own
    ``sockets`` directory, which the session cannot change: the gateway connects there, so
    a symlink the session puts in place of its socket (to PostgreSQL's, another session's
    or any host service's) is never followed by visa. True once published."""
    final = sockets_dir / name
    if final.exists():
        return True
    source = run_dir / name
    try:
        info = os.lstat(source)
    except OSError:
        return False
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != uid:
        return False
    tmp = sockets_dir / f".{name}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        os.link(source, tmp, follow_symlinks=False)
        linked = os.lstat(tmp)
        if (linked.st_ino, linked.st_dev) != (info.st_ino, info.st_dev) or not stat.S_ISSOCK(linked.st_mode):
            os.unlink(tmp)  # swapped between the two looks
            return False
        os.replace(tmp, final)
    except OSError:
        return False
    return True


# ---------------------------------------------------------------- the session's programs


class Session:
    """Starts and watches the desktop and JupyterLab: inside the sandbox as the session's
    account, or in the supervisor itself without one. ``home`` and ``run`` are the paths
    as these programs see them."""

    def __init__(self, record: records.SessionRecord, home: Path, run: Path, marker: str, log: Any) -> None:
        self.record = record
        self.home = home
        self.run_dir = run
        self.log = log
        # Absolute paths the provider resolved against the cloud's configured path (older
        # records: none, names looked up in that path).
        self.programs = record.programs
        self.critical: dict[str, subprocess.Popen[bytes]] = {}
        self.others: dict[str, subprocess.Popen[bytes]] = {}
        user = (record.account.name if record.account else None) or record.owner_username or "visa"
        self.env = {
            "PATH": record.path,
            "HOME": str(home),
            "USER": user,
            "LOGNAME": user,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "SHELL": "/bin/bash",
            "XAUTHORITY": str(run / XAUTHORITY_FILE),
            MARKER_ENV: marker,
        }

    def note(self, message: str) -> None:
        self.log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} session: {message}\n".encode())

    def argv(self, argv: list[str]) -> list[str]:
        return [self.programs.get(argv[0], argv[0]), *argv[1:]]

    def spawn(self, name: str, argv: list[str], *, critical: bool, **kwargs: Any) -> subprocess.Popen[bytes]:
        argv = self.argv(argv)
        self.note("starting " + " ".join(argv))
        proc = subprocess.Popen(
            argv,
            env=kwargs.pop("env", self.env),
            cwd=self.env["HOME"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
            **kwargs,
        )
        (self.critical if critical else self.others)[name] = proc
        return proc

    def start(self) -> None:
        protocols = self.record.protocols
        if "VNC" in protocols:
            if self.record.tools.get("cupsd"):
                self.start_printer()
            self.start_display()
            self.start_desktop_apps()
        if "JUPYTER" in protocols:
            self.start_jupyter()

    def start_printer(self) -> None:
        """The session's own CUPS scheduler (``printer``): not critical, a desktop without
        a printer still works. Every program started after it prints through it."""
        script = str(Path(__file__).with_name("printer.py"))  # in the sandbox: SANDBOX_PRINTER
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.run_dir / printer.SOCKET)
        try:
            argv = printer.configure(self.run_dir, self.home, python=sys.executable, script=script)
        except OSError as exc:
            self.note(f"no printer: {exc}")
            return
        self.spawn("printer", argv, critical=False)
        self.env["CUPS_SERVER"] = str(self.run_dir / printer.SOCKET)

    def start_display(self) -> int:
        record = self.record
        width, height = record.screen_width, record.screen_height
        xauth = str(self.run_dir / XAUTHORITY_FILE)
        # With the video proxy, the proxy answers on the session's VNC socket and the server
        # listens on one only the proxy uses.
        vnc_socket = str(self.run_dir / (VNC_SERVER_SOCKET if record.video_python else SOCKETS["VNC"]))
        for name in (SOCKETS["VNC"], VNC_SERVER_SOCKET):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.run_dir / name)  # left by a server killed with -9
        read_fd, write_fd = os.pipe()
        common = ["-displayfd", str(write_fd), "-auth", xauth, "-nolisten", "tcp"]
        password = str(self.run_dir / VNC_PASSWORD_FILE)
        if record.vnc_server == "tigervnc":
            # Xtigervnc is X server and VNC server in one process; RFB on a unix socket only.
            # No blacklist: every client of the socket has one address (its path), so 5
            # unauthenticated closes (visa's readiness probes) or failures would refuse
            # everyone, the owner through visa's gateway included; only visa (root) and the
            # session's own account can reach the 0600 socket, so it guards against nobody.
            argv = [
                "Xtigervnc", *common,
                "-geometry", f"{width}x{height}", "-depth", "24",
                "-rfbport", "-1", "-rfbunixpath", vnc_socket, "-rfbunixmode", "0600",
                "-UseBlacklist=0",
                "-SecurityTypes", "VncAuth", "-PasswordFile", password,
                "-AlwaysShared=1", "-desktop", record.name,
            ]  # fmt: skip
        else:
            argv = ["Xvfb", *common, "-screen", "0", f"{width}x{height}x24"]
        self.spawn("xserver", argv, critical=True, pass_fds=(write_fd,))
        os.close(write_fd)
        display = self._read_display(read_fd)
        self.env["DISPLAY"] = f":{display}"
        fd = os.open(self.run_dir / DISPLAY_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as out:
            out.write(f"{display}\n")
        if record.vnc_server == "x11vnc":
            self.spawn(
                "vnc",
                [
                    "x11vnc", "-display", f":{display}", "-auth", xauth,
                    "-rfbport", "0", "-unixsock", vnc_socket, "-rfbauth", password,
                    "-forever", "-shared", "-quiet", "-noxdamage",
                ],
                critical=True,
            )  # fmt: skip
        if record.video_python:
            self.start_video_proxy(record.video_python, vnc_socket, password)
        return display

    def start_video_proxy(self, python: str, server_socket: str, password: str) -> None:
        """The video proxy (``videoproxy.py``, beside this script) in front of the VNC server:
        here, in the sandbox, it parses what the server sends, never in visa's process."""
        deadline = time.monotonic() + 15
        while not _is_socket(server_socket):  # x11vnc makes its socket after starting
            if time.monotonic() > deadline:
                raise RuntimeError("the VNC server made no socket within 15 s")
            for proc in self.critical.values():
                if proc.poll() is not None:
                    raise RuntimeError(f"the VNC server exited with code {proc.returncode}")
            time.sleep(0.05)
        script = str(Path(__file__).with_name("videoproxy.py"))  # in the sandbox: SANDBOX_VIDEOPROXY
        self.spawn("video", [python, "-I", script, "--listen", str(self.run_dir / SOCKETS["VNC"]),
                             "--upstream", server_socket, "--password-file", password], critical=True)  # fmt: skip

    def _read_display(self, fd: int) -> int:
        """The X server writes its display number to the pipe once it accepts clients."""
        deadline = time.monotonic() + 15
        data = b""
        os.set_blocking(fd, False)
        try:
            while not data.endswith(b"\n"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the X server did not start within 15 s")
                if self.critical["xserver"].poll() is not None:
                    raise RuntimeError(f"the X server exited with code {self.critical['xserver'].returncode}")
                try:
                    chunk = os.read(fd, 64)
                except BlockingIOError:
                    time.sleep(0.02)
                    continue
                if not chunk:
                    raise RuntimeError("the X server closed its display pipe")
                data += chunk
        finally:
            os.close(fd)
        return int(data.strip())

    def start_desktop_apps(self) -> None:
        record = self.record
        tools = record.tools
        if tools.get("setxkbmap"):
            layout, variant = xkb_layout(record.keyboard_layout)
            argv = ["setxkbmap", layout] + (["-variant", variant] if variant else [])
            result = subprocess.run(self.argv(argv), env=self.env, stdin=subprocess.DEVNULL, capture_output=True,
                                    timeout=10)
            if result.returncode:
                self.note(f"keyboard layout {record.keyboard_layout!r} not applied: {result.stderr!r}")
        if tools.get("xsetroot"):
            subprocess.run(self.argv(["xsetroot", "-solid", "#2f4f6f"]), env=self.env, stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=10)
        self.spawn("wm", ["openbox"], critical=False)
        self.spawn(
            "terminal",
            ["xterm", "-geometry", "100x30+40+40", "-bg", "#fdf6e3", "-fg", "#073642", "-T", record.name],
            critical=False,
        )

    def start_jupyter(self) -> None:
        record = self.record
        env = dict(self.env)
        # The token goes through the environment, not argv, which every local user can read.
        env["JUPYTER_TOKEN"] = (self.run_dir / SECRET_FILE).read_text()
        env["JUPYTER_CONFIG_DIR"] = str(self.home / ".jupyter")
        env["JUPYTER_RUNTIME_DIR"] = str(self.run_dir / "jupyter-runtime")
        jupyter_socket = str(self.run_dir / SOCKETS["JUPYTER"])
        with contextlib.suppress(FileNotFoundError):
            os.unlink(jupyter_socket)
        argv = [
            *record.jupyter_command,
            "--no-browser", f"--ServerApp.sock={jupyter_socket}", "--ServerApp.sock_mode=0600",
            f"--ServerApp.base_url=/jupyter/{record.instance_uid}/",
            f"--ServerApp.root_dir={self.home}",
            # Reached through visa's reverse proxy, whose Host and Origin are not ours.
            "--ServerApp.allow_remote_access=True",
            f"--ServerApp.allow_origin={record.jupyter_allow_origin}",
            "--ServerApp.allow_root=True",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]  # fmt: skip
        if record.jupyter_cull_idle_seconds > 0:
            # Idle kernels hold memory (and GPUs) nobody uses; busy ones are never culled.
            argv += [
                f"--MappingKernelManager.cull_idle_timeout={record.jupyter_cull_idle_seconds}",
                f"--MappingKernelManager.cull_interval={record.jupyter_cull_interval_seconds}",
                f"--MappingKernelManager.cull_connected={record.jupyter_cull_connected}",
            ]
        self.spawn("jupyter", argv, critical=True, env=env)

    def check_children(self) -> None:
        for name, proc in self.critical.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}")
        for name, proc in list(self.others.items()):
            if proc.poll() is not None:
                self.note(f"{name} exited with code {proc.returncode}")
                del self.others[name]

    def stop(self, grace: float) -> None:
        procs = [*self.critical.values(), *self.others.values()]
        for proc in procs:
            with contextlib.suppress(OSError):
                proc.terminate()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
            with contextlib.suppress(OSError):
                proc.kill()


def run_inside(record_path: Path) -> int:
    """The session in its sandbox: start the programs, exit when a critical one ends (the
    supervisor outside sees the sandbox end and records the fault)."""
    record = records.SessionRecord.from_json(record_path.read_text(), str(record_path))
    if record.home is None or record.marker is None:
        raise records.RecordError(f"{record_path}: a sandboxed session's record names its home and marker")
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    os.umask(0o077)
    log = open(sys.stdout.fileno(), "wb", buffering=0, closefd=False)  # noqa: SIM115 - the sandbox's log
    session = Session(record, Path(record.home), Path(SANDBOX_RUN), record.marker, log)
    try:
        session.start()
        while not stopping:
            session.check_children()
            time.sleep(0.25)
    except Exception as exc:
        session.note(f"fault: {exc}")
        with contextlib.suppress(OSError):
            (session.run_dir / FAULT_FILE).write_text(str(exc)[:200])
        session.stop(1.0)
        return 1
    session.stop(TEARDOWN_GRACE)
    return 0


# ---------------------------------------------------------------- the supervisor


class Supervisor:
    def __init__(self, instance_dir: Path, record: records.SessionRecord) -> None:
        self.dir = instance_dir
        self.record = record
        self.status: dict[str, Any] = {"phase": "starting", "started_at": time.time(), "boot_id": boot_id()}
        self.stopping = False
        self.log = open(open_log(instance_dir / SUPERVISOR_LOG), "ab", buffering=0)  # noqa: SIM115 - lives as long as the session
        # The session's programs print into a pipe, never into a file they could reopen (and
        # read) through /proc/self/fd; a thread copies it to session.log, capped.
        read_fd, self.output_fd = os.pipe()
        os.set_inheritable(self.output_fd, False)
        capped = CappedLog(instance_dir / LOG_FILE, record.session_log_max_bytes or DEFAULT_LOG_MAX_BYTES)
        threading.Thread(target=capped.copy_from, args=(read_fd,), daemon=True).start()
        self.output = open(self.output_fd, "wb", buffering=0, closefd=False)  # noqa: SIM115 - as long as the session
        self.sandboxed = record.isolation == "sandbox"
        self.sandbox: subprocess.Popen[bytes] | None = None
        self.slirp: subprocess.Popen[bytes] | None = None
        self.netns_holder: subprocess.Popen[bytes] | None = None
        self.slirp_exit: int | None = None
        # The owner's home, kept across instances (older instances: their own directory).
        home = Path(record.home_dir or instance_dir / HOME_DIR)
        self.session = Session(record, home, instance_dir / RUN_DIR, str(instance_dir), self.output)

    def _save(self, **changes: Any) -> None:
        self.status.update(changes)
        write_json(self.dir / STATUS_FILE, self.status)

    def _note(self, message: str) -> None:
        self.log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} supervisor: {message}\n".encode())

    def start_sandbox(self) -> None:
        """bwrap, born in the session's cgroups: everything in the sandbox is counted there."""
        with contextlib.suppress(FileNotFoundError):
            (self.dir / RUN_DIR / FAULT_FILE).unlink()
        cgroups = [Path(p) / "cgroup.procs" for p in self.record.cgroups]

        def join_cgroups() -> None:
            for procs in cgroups:
                procs.write_text(f"{os.getpid()}\n")

        argv = list(self.record.sandbox_argv)
        self._note("starting sandbox " + " ".join(argv))
        # The data directories are bound through descriptors opened here, at each start, without
        # following a link: bwrap (root) never resolves a path a member could have changed.
        fds: list[int] = []
        enter: list[str] = []
        netns = None
        if self.record.slirp_account:
            holder, netns = self.prepare_network()
            enter = ["nsenter", f"--net=/proc/{holder}/ns/net", "--"]
        try:
            for index in self.record.sandbox_fds:
                try:
                    fd, _ = open_dir(argv[index])
                except OSError as exc:
                    raise RuntimeError(f"data directory {argv[index]}: {describe(exc)}") from None
                fds.append(fd)
                argv[index] = str(fd)
            # The options (host paths) go through a pipe: the sandbox's pid 1 is bwrap, whose
            # command line its processes can read.
            split = argv.index("--")
            options = argv[1:split]
            if self.record.seccomp:
                # bwrap loads the filter last, just before it execs the session's first program.
                seccomp_fd = os.open(self.dir / SECCOMP_FILE, os.O_RDONLY | os.O_NOFOLLOW)
                fds.append(seccomp_fd)
                options += ["--seccomp", str(seccomp_fd)]
            read_fd, write_fd = os.pipe()
            fds.append(read_fd)
            os.write(write_fd, b"".join(arg.encode() + b"\0" for arg in options))
            os.close(write_fd)
            self.sandbox = subprocess.Popen(
                [*enter, argv[0], "--args", str(read_fd), *argv[split:]],
                env={k: self.session.env[k] for k in ("PATH", "LANG", MARKER_ENV)},
                stdin=subprocess.DEVNULL,
                stdout=self.output,
                stderr=self.output,
                pass_fds=tuple(fds),
                start_new_session=True,
                preexec_fn=join_cgroups,  # only file writes between fork and exec
            )
        finally:
            for fd in fds:
                os.close(fd)
        # The sandbox's pid namespace names every process of the session, however they detach.
        deadline = time.monotonic() + 10
        while (ns := pid_ns_of_child(self.sandbox.pid)) is None:
            if self.sandbox.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the sandbox did not start (exit {self.sandbox.poll()})")
            time.sleep(0.01)
        self._save(sandbox_pid=ns[0], pid_ns=ns[1])
        if netns is not None:
            if os.stat(f"/proc/{ns[0]}/ns/net").st_ino != netns:
                raise RuntimeError("the sandbox is not in the network namespace made for it")
            self.start_slirp()
        elif self.record.network == "outside":
            # User-mode NAT into the sandbox's namespace; its 10.0.2.2 is not the host's loopback.
            self.slirp = subprocess.Popen(
                [self.record.programs.get("slirp4netns", "slirp4netns"), "--configure", "--mtu=65520",
                 "--disable-host-loopback", str(ns[0]), "tap0"],
                env={"PATH": self.record.path},
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=self.log,
                start_new_session=True,
            )

    def _slirp_account(self) -> tuple[int, int]:
        if not self.record.slirp_account or len(self.record.slirp_account) != 2:
            raise RuntimeError("the session's record names no network account (uid and gid)")
        uid, gid = self.record.slirp_account
        return uid, gid

    def _unprivileged(self) -> list[str]:
        """setpriv as the network's own account: not root, not the session's account."""
        uid, gid = self._slirp_account()
        return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--inh-caps=-all",
                "--bounding-set=-all", "--no-new-privs", "--"]  # fmt: skip

    def prepare_network(self) -> tuple[int, int]:
        """network = "outside" as root: the session's network namespace, made before any of
        its processes, owned by a user namespace of the network account (so slirp4netns joins
        it without root) and firewalled as root from outside (the session, with no capability
        there, cannot change it). The holder's pid and the namespace's inode."""
        self.netns_holder = subprocess.Popen(
            [*self._unprivileged(), "unshare", "--user", "--map-root-user", "--net", "--", "sleep", "infinity"],
            env={"PATH": self.record.path}, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
        )  # fmt: skip
        holder = self.netns_holder.pid
        deadline = time.monotonic() + 10
        while read_session_file(Path(f"/proc/{holder}/comm"), 32).strip() != "sleep":  # mapped, in place
            if self.netns_holder.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the session's network namespace was not made (exit {self.netns_holder.poll()})")
            time.sleep(0.01)
        blocked = [*self.record.blocked_networks, *(f"{a}/32" for a in host_addresses())]
        rules = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
                 *(f"-A OUTPUT -d {net} -j REJECT" for net in blocked), "COMMIT", ""]  # fmt: skip
        done = subprocess.run(
            ["nsenter", f"--net=/proc/{holder}/ns/net", "--", "iptables-restore"],
            input="\n".join(rules).encode(), env={"PATH": self.record.path}, capture_output=True, timeout=30,
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"the session's firewall was not set: {done.stderr.decode(errors='replace')[:200]}")
        self._note("network: refused " + ", ".join(blocked))
        return holder, os.stat(f"/proc/{holder}/ns/net").st_ino

    def start_slirp(self) -> None:
        """User-mode NAT into the session's namespace, unprivileged, in slirp4netns' own sandbox
        and seccomp filter; its 10.0.2.2 is not the host's loopback."""
        assert self.netns_holder is not None
        uid, gid = self._slirp_account()
        # It exits when the supervisor does (the exit pipe closes), and says when tap0 is up.
        exit_read, self.slirp_exit = os.pipe()
        ready_read, ready_write = os.pipe()
        try:
            self.slirp = subprocess.Popen(
                [*self._unprivileged(), "slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback",
                 "--enable-sandbox", "--enable-seccomp", f"--exit-fd={exit_read}", f"--ready-fd={ready_write}",
                 str(self.netns_holder.pid), "tap0"],
                env={"PATH": self.record.path}, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                pass_fds=(exit_read, ready_write),
                preexec_fn=lambda: private_tun(uid, gid),  # the supervisor has one thread
            )  # fmt: skip
        finally:
            os.close(exit_read)
            os.close(ready_write)
        try:
            ready, _, _ = select.select([ready_read], [], [], 10)
            if not ready or not os.read(ready_read, 1):
                raise RuntimeError(f"slirp4netns did not configure the session's network (exit {self.slirp.poll()})")
        finally:
            os.close(ready_read)
        # slirp4netns is in: the namespace lives on with the sandbox, its holder is done.
        self.netns_holder.kill()
        self.netns_holder.wait()

    def check(self) -> None:
        if self.sandbox is not None:
            if self.sandbox.poll() is not None:
                raise RuntimeError(f"the session's sandbox exited with code {self.sandbox.returncode}" + self._fault())
            if self.slirp is not None and self.slirp.poll() is not None:
                raise RuntimeError(f"slirp4netns, the session's network, exited with code {self.slirp.returncode}")
        else:
            self.session.check_children()

    def _fault(self) -> str:
        """What the session said went wrong: its own file, so printable text, bounded."""
        text = read_session_file(self.dir / RUN_DIR / FAULT_FILE, 200)
        return (": " + "".join(c for c in text if c.isprintable())) if text else ""

    def wait_ready(self) -> None:
        names = [SOCKETS[p] for p in self.record.protocols if p in SOCKETS]
        run_dir, published = self.dir / RUN_DIR, self.dir / SOCKETS_DIR
        uid = self.record.account.uid if self.record.account else os.getuid()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.stopping:
            self.check()
            display = read_display(run_dir)
            if all(
                publish_socket(run_dir, published, name, uid) and socket_open(str(published / name), 0.2)
                for name in names
            ) and (display is not None or "VNC" not in self.record.protocols):
                self._save(phase="running", ready_at=time.time(), display=display)
                self._note(f"ready in {time.time() - self.status['started_at']:.2f} s")
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{', '.join(self.record.protocols)} did not answer within {READY_TIMEOUT:.0f} s")
            time.sleep(0.1)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        self._save()
        # Links of an earlier run name sockets that no longer exist.
        published = self.dir / SOCKETS_DIR
        published.mkdir(mode=0o700, exist_ok=True)
        for stale in published.iterdir():
            stale.unlink()
        # And the session's own sockets of that run, before they could be published again.
        for name in (*SOCKETS.values(), DISPLAY_FILE):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.dir / RUN_DIR / name)
        try:
            if self.sandboxed:
                self.start_sandbox()
            else:
                self.session.start()
            self.wait_ready()
            while not self.stopping:
                self.check()
                time.sleep(0.25)
        except Exception as exc:  # the fault is the session's, reported through status.json
            if not self.stopping:
                fault = str(exc)
                self._note(f"fault: {fault}")
                self._teardown()
                self._save(phase="failed", fault=fault, ended_at=time.time())
                return 1
        self._teardown()
        self._save(phase="stopped", ended_at=time.time())
        return 0

    def _on_term(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _teardown(self) -> None:
        for helper in (self.slirp, self.netns_holder):
            if helper is not None:
                helper.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    helper.wait(timeout=2)
        if self.sandbox is not None:
            kill_session(self.dir, self.status.get("pid_ns"), TEARDOWN_GRACE)
            self.sandbox.kill()  # its init's death takes the whole pid namespace
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.sandbox.wait(timeout=2)
            return
        self.session.stop(1.0)
        kill_session(self.dir, None, TEARDOWN_GRACE)


def private_tun(uid: int, gid: int) -> None:
    """In a mount namespace of this process's own, /dev/net/tun only ``uid`` may open, whatever
    the host's node allows (often root only): slirp4netns needs it and runs as that uid."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    clone_newns, ms_rec, ms_private, ms_nosuid, ms_noexec = 0x00020000, 0x4000, 1 << 18, 2, 8
    if libc.unshare(clone_newns) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    if libc.mount(None, b"/", None, ms_rec | ms_private, None) != 0:
        raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
    if libc.mount(b"tmpfs", b"/dev/net", b"tmpfs", ms_nosuid | ms_noexec, b"mode=0755,size=4k") != 0:
        raise OSError(ctypes.get_errno(), "mount tmpfs /dev/net")
    os.mknod("/dev/net/tun", stat.S_IFCHR | 0o600, os.makedev(10, 200))
    os.chown("/dev/net/tun", uid, gid)


def host_addresses() -> list[str]:
    """This network namespace's own IPv4 addresses (the kernel's LOCAL routes)."""
    found: list[str] = []
    last = ""
    try:
        lines = Path("/proc/self/net/fib_trie").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        text = line.strip()
        if text.startswith(("|--", "+--")):
            last = text[3:].split()[0]
        elif text == "/32 host LOCAL" and last not in found:
            found.append(last)
    return found


def pid_ns_of_child(parent: int) -> tuple[int, str] | None:
    """bwrap forks the sandbox's init: its pid and pid namespace, once it exists."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == parent:
            ns = pid_ns_of(int(entry.name))
            if ns is not None:
                return int(entry.name), ns
    return None


def main(argv: list[str]) -> int:
    if argv[1] == "--inside":
        return run_inside(Path(argv[2]))
    instance_dir = Path(argv[1]).resolve()
    # Read before the fork: a record this script cannot read is the provider's error to report.
    try:
        record = records.read(instance_dir / INSTANCE_FILE)
    except records.RecordError as exc:
        print(f"supervisor: {exc}", file=sys.stderr)
        return 1
    if record is None:
        print(f"supervisor: {instance_dir / INSTANCE_FILE} cannot be read", file=sys.stderr)
        return 1
    # Fork once: the parent (waited for by the provider) records the child's pid and exits,
    # so the supervisor is reparented away from visa and outlives it.
    child = os.fork()
    if child:
        start = None
        while start is None:
            start = proc_start_time(child)
        (instance_dir / f".{PID_FILE}.tmp").write_text(f"{child} {start}\n")
        os.replace(instance_dir / f".{PID_FILE}.tmp", instance_dir / PID_FILE)
        os._exit(0)
    os.setsid()
    return Supervisor(instance_dir, record).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
