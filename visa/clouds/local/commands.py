"""Commands run as part of a running session (``exec_in_session``, ``sftp-server``) the way its
own programs run: in its sandbox's namespaces, its cgroups and its seccomp filter, as its
account; and their output read with a bound."""

from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visa.clouds import seccomp
from visa.clouds.local import printer
from visa.clouds.local import supervisor as session
from visa.clouds.local.accounts import is_root
from visa.clouds.local.record import SessionRecord
from visa.clouds.local.sandbox import groups_option
from visa.errors import CloudError

# What visa keeps of a command's output in a session (each stream): the session writes it.
EXEC_MAX_OUTPUT = 1 << 20
NS_GET_PARENT = 0xB702  # ioctl on a namespace fd: its parent user namespace (linux/nsfs.h)


@dataclass
class SessionCommand:
    """A command ready to run inside a session, and the descriptors it holds until it has started."""

    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    fds: tuple[int, ...]
    preexec: Any

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


def session_command(
    instance_dir: Path, record: SessionRecord, status: dict[str, Any], argv: list[str], *, path: str
) -> SessionCommand:
    """``argv`` made to run inside the running session of ``instance_dir``. Its program and
    the tools that enter the sandbox are found in ``path``, here, and run by absolute path."""

    def program(name: str) -> str:
        return name if "/" in name else shutil.which(name, path=path) or name

    argv = [program(argv[0]), *argv[1:]]
    sandboxed = record.isolation == "sandbox"
    if sandboxed and (record.account is None or record.home is None):
        raise CloudError(f"the record of session {instance_dir.name} names no sandbox account and home")
    run_dir = Path(session.SANDBOX_RUN) if sandboxed else instance_dir / session.RUN_DIR
    env = {
        "PATH": path,
        "HOME": (record.home if sandboxed else record.home_dir) or str(instance_dir / session.HOME_DIR),
        "XAUTHORITY": str(run_dir / session.XAUTHORITY_FILE),
        session.MARKER_ENV: str(instance_dir),
    }
    if record.tools.get("cupsd") and "VNC" in record.protocols:
        env["CUPS_SERVER"] = str(run_dir / printer.SOCKET)  # the session's own printer
    display = session.read_display(instance_dir / session.RUN_DIR)
    if display is not None:
        env["DISPLAY"] = f":{display}"
    cgroups = [Path(p) / "cgroup.procs" for p in record.cgroups]
    fds: list[int] = []
    if sandboxed:
        target = status.get("sandbox_pid")
        if not target or session.pid_ns_of(int(target)) != status.get("pid_ns"):
            raise CloudError(f"session {instance_dir.name} has no sandbox running")
        acct = record.account
        assert acct is not None  # checked above
        namespaces = ["--mount", "--uts", "--ipc", "--net", "--pid", "--root", "--wd"]
        if is_root():
            drop = [program("setpriv"), "--reuid", str(acct.uid), "--regid", str(acct.gid),
                    *groups_option(acct), "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]  # fmt: skip
            argv = [program("nsenter"), f"--target={target}", *namespaces, "--", *drop, "--", *argv]
        else:
            # bwrap's namespaces belong to its outer user namespace, its processes live in
            # an inner one: enter the outer to join them, then the inner to be the session.
            nsenter = program("nsenter")
            inner = os.open(f"/proc/{target}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
            fds = [inner, fcntl.ioctl(inner, NS_GET_PARENT)]
            argv = [
                nsenter, f"--target={target}", f"--user=/proc/self/fd/{fds[1]}", "--preserve-credentials",
                *namespaces, "--", nsenter, f"--user=/proc/self/fd/{inner}", "--preserve-credentials", "--",
                program("setpriv"), "--inh-caps=-all", "--no-new-privs", "--", *argv,
            ]  # fmt: skip

    if sandboxed and record.seccomp:
        # Under the session's filter before it enters the sandbox: no process of the session
        # runs without it (one that did could be ptraced into the calls it denies).
        argv = [sys.executable, "-I", seccomp.__file__, str(instance_dir / session.SECCOMP_FILE), "--", *argv]

    def join_cgroups() -> None:
        for procs in cgroups:
            procs.write_text(f"{os.getpid()}\n")

    return SessionCommand(argv, env, None if sandboxed else env["HOME"], tuple(fds), join_cgroups if cgroups else None)


def bounded_output(
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
