"""The supervisor of one local session: run as a script, inside the session's mount namespace.

The local provider starts ``python local_session.py <instance dir>`` (through ``unshare``
when it can). The script forks once so the supervisor is no child of the visa process (a
restarted visa must not matter, and no zombie is left behind), writes its pid, bind-mounts
the experiment data, starts the desktop and JupyterLab, and then watches them:

* ``status.json`` says ``starting`` until every port answers, then ``running``;
* a critical process (X/VNC server, JupyterLab) that exits is a fault: the supervisor tears
  the session down and records ``failed`` with the reason;
* SIGTERM (from ``stop``) tears the session down and records ``stopped``.

Stdlib only and importable, so the provider shares the file names and helpers below
without the script paying for visa's imports at every start.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

INSTANCE_FILE = "instance.json"
STATUS_FILE = "status.json"
PID_FILE = "supervisor.pid"
STOPPED_FILE = "stopped"
SECRET_FILE = "secret"
VNC_PASSWORD_FILE = "vncpasswd"
XAUTHORITY_FILE = "Xauthority"
LOG_FILE = "session.log"
HOME_DIR = "home"
SYMLINK_DIR = "mounts"
# Every process of a session inherits this variable: how stop finds kernels and shells
# that left the supervisor's process group.
MARKER_ENV = "VISA_LOCAL_SESSION"

READY_TIMEOUT = 60.0
TEARDOWN_GRACE = 3.0


# ---------------------------------------------------------------- helpers shared with the provider


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic write, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


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


def session_pids(instance_dir: Path, mnt_ns: str | None = None) -> list[int]:
    """Every live process that belongs to the session: by marker, or by mount namespace."""
    marker = f"{MARKER_ENV}={instance_dir}".encode()
    own = os.getpid()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        pid = int(entry.name)
        try:
            if mnt_ns and os.readlink(f"/proc/{pid}/ns/mnt") == mnt_ns:
                found.append(pid)
                continue
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(pid)
        except OSError:
            continue
    return [pid for pid in found if pid_alive(pid)]


def kill_session(instance_dir: Path, mnt_ns: str | None, grace: float) -> None:
    """SIGTERM every process of the session, then SIGKILL what is left after ``grace``."""
    pids = session_pids(instance_dir, mnt_ns)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = [pid for pid in pids if pid_alive(pid)]
    for pid in session_pids(instance_dir, mnt_ns):
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


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def write_xauthority(path: Path, cookie: bytes) -> None:
    """One MIT-MAGIC-COOKIE-1 entry of family Wild: good for any display number, which
    the X server picks itself (-displayfd), so the file is ready before it starts."""

    def field(value: bytes) -> bytes:
        return struct.pack(">H", len(value)) + value

    entry = struct.pack(">H", 0xFFFF) + field(b"") + field(b"") + field(b"MIT-MAGIC-COOKIE-1") + field(cookie)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
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


# ---------------------------------------------------------------- the supervisor


class Supervisor:
    def __init__(self, instance_dir: Path) -> None:
        self.dir = instance_dir
        self.spec: dict[str, Any] = json.loads((instance_dir / INSTANCE_FILE).read_text())
        self.status: dict[str, Any] = {"phase": "starting", "started_at": time.time(), "boot_id": boot_id()}
        self.critical: dict[str, subprocess.Popen[bytes]] = {}
        self.others: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self.log = open(instance_dir / LOG_FILE, "ab", buffering=0)  # noqa: SIM115 - lives as long as the session
        self.env = self._base_env()

    def _base_env(self) -> dict[str, str]:
        home = str(self.dir / HOME_DIR)
        env = {
            "PATH": self.spec["path"],
            "HOME": home,
            "USER": self.spec.get("owner_username") or "visa",
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "SHELL": "/bin/bash",
            "XAUTHORITY": str(self.dir / XAUTHORITY_FILE),
            MARKER_ENV: str(self.dir),
        }
        return env

    def _save(self, **changes: Any) -> None:
        self.status.update(changes)
        write_json(self.dir / STATUS_FILE, self.status)

    def _note(self, message: str) -> None:
        self.log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} supervisor: {message}\n".encode())

    def _spawn(self, name: str, argv: list[str], *, critical: bool, **kwargs: Any) -> subprocess.Popen[bytes]:
        self._note("starting " + " ".join(argv))
        proc = subprocess.Popen(
            argv,
            env=kwargs.pop("env", self.env),
            cwd=self.env["HOME"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            **kwargs,
        )
        (self.critical if critical else self.others)[name] = proc
        return proc

    # -- steps

    def mount_data(self) -> None:
        """Bind the experiment data at the paths a VM would have; read-only unless asked.

        We are alone in a private mount namespace (unshare), so none of this is seen
        outside the session and it all goes away with its last process."""
        if self.spec["mount_mode"] != "namespace":
            return
        for mount in self.spec["mounts"]:
            target = mount["target"]
            subprocess.run(["mount", "--bind", mount["source"], target], check=True, capture_output=True)
            if mount["read_only"]:
                subprocess.run(["mount", "-o", "remount,bind,ro", target], check=True, capture_output=True)

    def start_display(self) -> int:
        spec = self.spec
        width, height = spec["screen_width"], spec["screen_height"]
        xauth = str(self.dir / XAUTHORITY_FILE)
        read_fd, write_fd = os.pipe()
        common = ["-displayfd", str(write_fd), "-auth", xauth, "-nolisten", "tcp"]
        if spec["vnc_server"] == "tigervnc":
            # Xtigervnc is X server and VNC server in one process.
            argv = [
                "Xtigervnc", *common,
                "-geometry", f"{width}x{height}", "-depth", "24",
                "-rfbport", str(spec["ports"]["VNC"]), "-interface", "127.0.0.1", "-localhost=1",
                "-SecurityTypes", "VncAuth", "-PasswordFile", str(self.dir / VNC_PASSWORD_FILE),
                "-AlwaysShared=1", "-desktop", spec["name"],
            ]  # fmt: skip
        else:
            argv = ["Xvfb", *common, "-screen", "0", f"{width}x{height}x24"]
        self._spawn("xserver", argv, critical=True, pass_fds=(write_fd,))
        os.close(write_fd)
        display = self._read_display(read_fd)
        self.env["DISPLAY"] = f":{display}"
        self._save(display=display)
        if spec["vnc_server"] == "x11vnc":
            self._spawn(
                "vnc",
                [
                    "x11vnc", "-display", f":{display}", "-auth", xauth,
                    "-rfbport", str(spec["ports"]["VNC"]), "-localhost", "-rfbauth", str(self.dir / VNC_PASSWORD_FILE),
                    "-forever", "-shared", "-quiet", "-noxdamage",
                ],
                critical=True,
            )  # fmt: skip
        return display

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
        spec = self.spec
        tools = spec["tools"]
        if tools.get("setxkbmap"):
            layout, variant = xkb_layout(spec["keyboard_layout"])
            argv = ["setxkbmap", layout] + (["-variant", variant] if variant else [])
            result = subprocess.run(argv, env=self.env, capture_output=True, timeout=10)
            if result.returncode:
                self._note(f"keyboard layout {spec['keyboard_layout']!r} not applied: {result.stderr!r}")
        if tools.get("xsetroot"):
            subprocess.run(["xsetroot", "-solid", "#2f4f6f"], env=self.env, capture_output=True, timeout=10)
        self._spawn("wm", ["openbox"], critical=False)
        self._spawn(
            "terminal",
            ["xterm", "-geometry", "100x30+40+40", "-bg", "#fdf6e3", "-fg", "#073642", "-T", spec["name"]],
            critical=False,
        )

    def start_jupyter(self) -> None:
        spec = self.spec
        env = dict(self.env)
        # The token goes through the environment, not argv, which every local user can read.
        env["JUPYTER_TOKEN"] = (self.dir / SECRET_FILE).read_text()
        env["JUPYTER_CONFIG_DIR"] = str(self.dir / HOME_DIR / ".jupyter")
        env["JUPYTER_RUNTIME_DIR"] = str(self.dir / "jupyter-runtime")
        argv = [
            *spec["jupyter_command"],
            "--no-browser", "--ip=127.0.0.1", f"--port={spec['ports']['JUPYTER']}", "--port-retries=0",
            f"--ServerApp.base_url=/jupyter/{spec['instance_uid']}/",
            f"--ServerApp.root_dir={self.dir / HOME_DIR}",
            # Reached through visa's reverse proxy, whose Host and Origin are not ours.
            "--ServerApp.allow_remote_access=True",
            f"--ServerApp.allow_origin={spec['jupyter_allow_origin']}",
            "--ServerApp.allow_root=True",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]  # fmt: skip
        self._spawn("jupyter", argv, critical=True, env=env)

    def wait_ready(self) -> None:
        ports = list(self.spec["ports"].values())
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.stopping:
            self.check_children()
            if all(port_open(port, 0.2) for port in ports):
                self._save(phase="running", ready_at=time.time())
                self._note(f"ready in {time.time() - self.status['started_at']:.2f} s")
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"ports {ports} did not answer within {READY_TIMEOUT:.0f} s")
            time.sleep(0.1)

    def check_children(self) -> None:
        for name, proc in self.critical.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}")
        for name, proc in list(self.others.items()):
            if proc.poll() is not None:
                self._note(f"{name} exited with code {proc.returncode}")
                del self.others[name]

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        self._save()
        try:
            self.mount_data()
            protocols = self.spec["ports"]
            if "VNC" in protocols:
                self.start_display()
                self.start_desktop_apps()
            if "JUPYTER" in protocols:
                self.start_jupyter()
            self.wait_ready()
            while not self.stopping:
                self.check_children()
                time.sleep(0.25)
        except Exception as exc:  # the fault is the session's, reported through status.json
            if not self.stopping:
                detail = (
                    exc.stderr.decode(errors="replace").strip()
                    if isinstance(exc, subprocess.CalledProcessError)
                    else ""
                )
                fault = f"{exc} {detail}".strip()
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
        kill_session(self.dir, None, TEARDOWN_GRACE)
        for proc in (*self.critical.values(), *self.others.values()):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)


def main(argv: list[str]) -> int:
    instance_dir = Path(argv[1]).resolve()
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
    return Supervisor(instance_dir).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
