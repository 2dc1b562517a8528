"""The RDP bridge: the desktop of a machine that offers RDP and no VNC (a Windows machine, an
xrdp image), shown through a desktop of visa's host whose only window is FreeRDP.

For each desktop connection the gateway starts, in a bubblewrap sandbox as an unprivileged account
of its own (``_visa-rdp`` when visa is root; visa's uid in a user namespace otherwise), a TigerVNC X
server in inetd mode (its RFB stream is one end of a socket pair the gateway holds: no socket in
the filesystem, no password) and ``xfreerdp`` connected to the machine. The RDP server is hostile:

* the sandbox has no network at all (a network namespace of its own, empty); FreeRDP reaches the
  machine through a unix socket the gateway listens on and connects to the instance's RDP address
  and port, and to nothing else;
* it sees /usr, the few files of /etc a desktop needs, its own /tmp, and that socket: never
  visa's data directory, configuration, secret key or database, nor any session;
* the password (the instance secret) goes down a pipe to ``xfreerdp /from-stdin``: it is on no
  command line and in no environment;
* as root the processes have no capability, ``no_new_privs`` and visa's seccomp filter (no user
  namespaces).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from visa.clouds import seccomp
from visa.clouds.local.accounts import is_root, system_account
from visa.clouds.local.config import DEFAULT_PATH
from visa.clouds.local.sandbox import SANDBOX_ETC, _bwrap_disables_userns, _probe_bwrap, _usr_links
from visa.gateway.common import log
from visa.gateway.relay import Upstream
from visa.provisioning import names

# The unix account bridges run as when visa is root: a system account of their own.
ACCOUNT = "_visa-rdp"
# Where the sandbox sees the directory holding the socket to the machine.
SANDBOX_RUN = "/run/visa-rdp"
RDP_SOCKET = "rdp.sock"
# Connections FreeRDP may hold to the machine at once (it opens one; a redirection, a second).
MAX_RDP_CONNECTIONS = 2

# visa's keyboard layouts (``names.KEYBOARD_LAYOUTS``) as the Windows keyboard layout ids FreeRDP's
# ``/kbd:`` sends to the machine (``xfreerdp /kbd-list`` names them). The bridge's X server gets the
# same layout (XKB), so that a key the browser sends reaches the machine as the key of that layout.
RDP_KEYBOARDS: dict[str, int] = {
    "en-us": 0x0409, "en-gb": 0x0809, "fr-fr": 0x040C, "de-de": 0x0407, "it-it": 0x0410, "es-es": 0x040A,
    "fr-ch": 0x100C, "de-ch": 0x0807, "fr-be": 0x080C, "nl-nl": 0x0413, "pt-pt": 0x0816, "sv-se": 0x041D,
    "da-dk": 0x0406, "nb-no": 0x0414, "fi-fi": 0x040B, "pl-pl": 0x0415, "cs-cz": 0x0405, "ja-jp": 0x0411,
    "fr-ca": 0x1009,
}  # fmt: skip
DEFAULT_KEYBOARD = "en-us"


@dataclass(frozen=True)
class Keyboard:
    """A layout as the bridge uses it: FreeRDP's layout id and the X server's XKB layout and variant."""

    rdp_id: int
    xkb_layout: str
    xkb_variant: str

    @property
    def kbd_option(self) -> str:
        return f"/kbd:0x{self.rdp_id:08X}"


def keyboard(layout: str) -> Keyboard:
    """The bridge's keyboard for an instance's layout: one of visa's table (a layout with a variant,
    ``fr-fr-azerty``, by its language and country), else US English, logged."""
    name = "-".join(layout.lower().split("-")[:2]) if isinstance(layout, str) else ""
    if name not in RDP_KEYBOARDS:
        log.warning("RDP bridge: keyboard layout %r has no RDP id: US English used", str(layout)[:40])
        name = DEFAULT_KEYBOARD
    xkb_layout, xkb_variant = names.keyboard(name)
    return Keyboard(RDP_KEYBOARDS[name], xkb_layout, xkb_variant)


# Why FreeRDP ended, by its exit status (xfreerdp's documented codes, FreeRDP 2): a fixed text of
# visa's, logged and sent as the desktop's close reason. Never FreeRDP's output nor the machine's
# text (FreeRDP's output goes nowhere). 12 is a session signed out: xrdp ends a refused login so.
LOGIN_REFUSED = "the machine refused the login"
_EXIT_REASONS: tuple[tuple[frozenset[int], str], ...] = (
    (frozenset({9, 10, 132, 134, 135, 144, 148, 149, 151, 152, 153, 154, 155, 156, 157, 158, 159}), LOGIN_REFUSED),
    (frozenset({12}), "the machine signed the session out, or refused the login"),
    (frozenset({2}), "the session on the machine was logged off"),
    (frozenset({3, 4}), "the machine ended the session after a time limit"),
    (frozenset({5}), "the session on the machine was taken over by another connection"),
    (frozenset({7, 8}), "the machine refused the connection"),
    (frozenset({131, 137, 139, 140, 141, 142, 147, 150, 160}), "the machine's RDP server does not answer"),
    (frozenset({133, 143}), "no secure RDP connection could be agreed with the machine"),
    (frozenset(range(16, 27)), "the machine's RDP licensing refused the connection"),
)
# Exit statuses of a session that ended as sessions do (closed, disconnected): no reason to give.
_EXIT_NORMAL = frozenset({0, 1, 11})


def exit_reason(status: int | None) -> str | None:
    """FreeRDP's exit status in visa's words; None for a normal end (or one still running)."""
    if status is None or status in _EXIT_NORMAL or status < 0:  # < 0: killed by visa (a signal)
        return None
    return next((text for codes, text in _EXIT_REASONS if status in codes), "the RDP connection failed")


class BridgeUnavailable(RuntimeError):
    """The bridge cannot run here (programs missing, no sandbox): the reason is safe to log."""


@dataclass(frozen=True)
class Programs:
    bwrap: str
    xvnc: str
    xfreerdp: str
    setpriv: str | None
    setxkbmap: str | None  # the X server's keyboard layout (x11-xkb-utils); without it, US English


@functools.cache
def programs() -> Programs:
    """The programs the bridge needs, found in the local cloud's default path (never visa's PATH)."""
    found = {name: shutil.which(name, path=DEFAULT_PATH) for name in ("bwrap", "Xtigervnc", "xfreerdp", "setpriv",
                                                                           "setxkbmap")}
    missing = [name for name in ("bwrap", "Xtigervnc", "xfreerdp") if found[name] is None]
    if is_root() and found["setpriv"] is None:
        missing.append("setpriv")
    if missing:
        raise BridgeUnavailable(f"the RDP bridge needs {', '.join(missing)} (apt-get install bubblewrap "
                                "tigervnc-standalone-server freerdp2-x11 util-linux)")
    bwrap = found["bwrap"] or ""
    if not _probe_bwrap(bwrap, userns=not is_root()):
        raise BridgeUnavailable("bubblewrap cannot make namespaces here: the RDP bridge is not run unsandboxed")
    return Programs(bwrap, found["Xtigervnc"] or "", found["xfreerdp"] or "", found["setpriv"], found["setxkbmap"])


def bridge_account() -> tuple[int, int]:
    """uid and gid the bridge runs as: ``_visa-rdp`` as root (made if missing), else visa's own
    (mapped in a user namespace, which holds no capability on the host)."""
    if not is_root():
        return os.getuid(), os.getgid()
    entry = system_account(ACCOUNT, "visa RDP bridges", DEFAULT_PATH)
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise BridgeUnavailable(f"the account {ACCOUNT} is root's: refused")
    return entry.pw_uid, entry.pw_gid


def sandbox_argv(progs: Programs, run_dir: Path, uid: int, gid: int, seccomp_fd: int | None) -> list[str]:
    """bwrap and its options, up to the program run in the sandbox (as ``uid``:``gid``)."""
    out = [progs.bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
           "--unshare-net", "--unshare-cgroup-try", "--hostname", "visa-rdp"]  # fmt: skip
    if not is_root():
        out += ["--unshare-user", "--uid", str(uid), "--gid", str(gid), "--cap-drop", "ALL"]
        out += ["--disable-userns"] if _bwrap_disables_userns(progs.bwrap) else []
    out += ["--ro-bind", "/usr", "/usr", *_usr_links()]
    for name in SANDBOX_ETC:
        out += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    out += ["--ro-bind", str(run_dir / "passwd"), "/etc/passwd", "--ro-bind", str(run_dir / "group"), "/etc/group"]
    out += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--dir",
            "/tmp/.X11-unix", "--perms", "1777", "--tmpfs", "/var/tmp", "--perms", "0755", "--dir", "/run",
            "--ro-bind", str(run_dir), SANDBOX_RUN, "--chdir", "/tmp"]  # fmt: skip
    if seccomp_fd is not None:
        out += ["--seccomp", str(seccomp_fd)]
    out.append("--")
    if is_root():
        out += [progs.setpriv or "setpriv", "--reuid", str(uid), "--regid", str(gid), "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]  # fmt: skip
    return out


def bridge_script(progs: Programs, password_fd: int, kbd: Keyboard) -> str:
    """What bash runs in the sandbox: the X server on the socket pair (fd 0) and, once it answers,
    its keyboard layout and FreeRDP with the password on its stdin (from ``password_fd``).
    Arguments: username, width, height, XKB layout, XKB variant."""
    fd = int(password_fd)
    kbd_option = Keyboard(int(kbd.rdp_id), "", "").kbd_option  # a number: nothing else reaches the script
    layout = (f'{progs.setxkbmap} -display :0 "$4" ${{5:+-variant "$5"}} >/dev/null 2>&1 '
              '|| echo "the keyboard layout was not set" >&2\n') if progs.setxkbmap else ""
    return (
        f'{progs.xvnc} :0 -inetd -nolisten tcp -geometry "$2x$3" -depth 24 -SecurityTypes None '
        # Explicitly fd 0: bash gives a command it starts in the background /dev/null otherwise.
        f'-desktop "$1" 0<&0 {fd}<&- >/dev/null 2>&1 &\n'
        "n=0\n"
        "while [ ! -S /tmp/.X11-unix/X0 ]; do\n"
        '  n=$((n + 1)); [ "$n" -gt 300 ] && { echo "the X server did not start" >&2; exit 1; }\n'
        "  sleep 0.05\n"
        "done\n"
        f"{layout}"
        # The RDP server's certificate is not checked: the channel runs on the facility's network to
        # a machine visa created, whose self-signed certificate visa never saw; and FreeRDP reaches
        # only that machine's address and port (the socket below), never another host.
        f'exec {progs.xfreerdp} /v:{SANDBOX_RUN}/{RDP_SOCKET} "/u:$1" /from-stdin:force /cert:ignore {kbd_option} '
        f'"/size:$2x$3" /bpp:24 -decorations -wallpaper /log-level:WARN 0<&{fd} {fd}<&- >/dev/null\n'
    )


def bridge_argv(progs: Programs, run_dir: Path, uid: int, gid: int, seccomp_fd: int | None, password_fd: int,
                kbd: Keyboard, username: str, screen: tuple[int, int]) -> list[str]:
    """The bridge's whole command line: the sandbox, then the script and its arguments (the
    password is not one: it is read from ``password_fd``)."""
    return [*sandbox_argv(progs, run_dir, uid, gid, seccomp_fd), "/bin/bash", "--norc", "--noprofile", "-c",
            bridge_script(progs, password_fd, kbd), "bridge", username, str(int(screen[0])), str(int(screen[1])),
            kbd.xkb_layout, kbd.xkb_variant]  # fmt: skip


class Bridge:
    """One running bridge: its sandbox, the listener FreeRDP reaches the machine through, and the
    gateway's end of the VNC stream (``upstream``)."""

    def __init__(self, run_dir: Path, server: asyncio.AbstractServer, proc: asyncio.subprocess.Process,
                 upstream: Upstream, relays: dict[asyncio.Task[None], list[asyncio.StreamWriter]]) -> None:
        self.run_dir = run_dir
        self.relays = relays
        self.server = server
        self.proc = proc
        self.upstream = upstream

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def ended(self, wait: float = 5) -> str | None:
        """Why the bridge ended, in visa's words (``exit_reason``), waiting up to ``wait`` seconds
        for FreeRDP to exit (the stream ends as it does); None when it ended normally or runs on."""
        if self.proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self.proc.wait()
        return exit_reason(self.proc.returncode)

    async def close(self) -> None:
        self.upstream.close()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.proc.wait()
        self.server.close()
        # Closing both ends of each relay ends it (a task cancelled would be logged by asyncio).
        for writers in list(self.relays.values()):
            for writer in writers:
                writer.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.gather(*self.relays, return_exceptions=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(256 * 1024):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def open_bridge(host: str, port: int, username: str, password: str, screen: tuple[int, int],
                      connect_timeout: float, keyboard_layout: str = DEFAULT_KEYBOARD) -> Bridge:
    """Start a bridge to the RDP server at host:port; raises ``BridgeUnavailable`` or ``OSError``."""
    progs = await asyncio.to_thread(programs)
    kbd = keyboard(keyboard_layout)
    uid, gid = await asyncio.to_thread(bridge_account)
    run_dir = Path(tempfile.mkdtemp(prefix="visa-rdp-"))
    relays: dict[asyncio.Task[None], list[asyncio.StreamWriter]] = {}

    async def to_machine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Each connection FreeRDP makes goes to the instance's RDP address and port, nowhere else."""
        task = asyncio.current_task()
        if len(relays) >= MAX_RDP_CONNECTIONS or task is None:
            writer.close()
            return
        relays[task] = [writer]
        try:
            async with asyncio.timeout(connect_timeout):
                up_reader, up_writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            log.warning("RDP bridge: the machine at %s:%s does not answer: %s", host, port, type(exc).__name__)
            relays.pop(task, None)
            writer.close()
            return
        relays[task].append(up_writer)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)
        finally:
            relays.pop(task, None)

    server: asyncio.AbstractServer | None = None
    fds: list[int] = []
    ours: socket.socket | None = None
    try:
        (run_dir / "passwd").write_text("root:x:0:0:root:/root:/usr/sbin/nologin\n"
                                        f"{ACCOUNT}:x:{uid}:{gid}::/tmp:/usr/sbin/nologin\n")
        (run_dir / "group").write_text(f"root:x:0:\n{ACCOUNT}:x:{gid}:\n")
        for name in ("passwd", "group"):
            (run_dir / name).chmod(0o644)
        server = await asyncio.start_unix_server(to_machine, str(run_dir / RDP_SOCKET))
        if is_root():  # only the bridge's group (and root) may enter, and connect
            os.chown(run_dir, 0, gid)
            os.chown(run_dir / RDP_SOCKET, 0, gid)
        run_dir.chmod(0o750)
        (run_dir / RDP_SOCKET).chmod(0o660)

        ours, theirs = socket.socketpair()
        password_read, password_write = os.pipe()
        fds += [theirs.detach(), password_read]
        os.write(password_write, password.encode() + b"\n")  # far below a pipe's buffer
        os.close(password_write)
        seccomp_fd = None
        if is_root():
            seccomp_fd, filter_write = os.pipe()
            fds.append(seccomp_fd)
            os.write(filter_write, seccomp.program())
            os.close(filter_write)
        argv = bridge_argv(progs, run_dir, uid, gid, seccomp_fd, password_read, kbd, username, screen)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=fds[0],
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            pass_fds=tuple(fds[1:]),
            env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "DISPLAY": ":0"},
            start_new_session=True,
        )
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_unix_connection(Upstream, sock=ours)
        ours = None
        return Bridge(run_dir, server, proc, upstream, relays)
    except BaseException:
        if ours is not None:
            ours.close()
        if server is not None:
            server.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
