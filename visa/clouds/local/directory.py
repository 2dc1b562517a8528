"""An instance's directory under the cloud's ``root_dir``: staged whole and renamed into place,
its supervisor launched, and its state read back (everything the provider knows is on disk,
so a restarted visa lists, stops and deletes the sessions an earlier one started)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from visa.clouds import seccomp
from visa.clouds.base import Server, ServerSpec
from visa.clouds.local import accounts, cgroups, sandbox
from visa.clouds.local import record as records
from visa.clouds.local import supervisor as session
from visa.clouds.local.accounts import Account, is_root
from visa.clouds.local.config import LocalConfig
from visa.clouds.local.record import SessionRecord
from visa.errors import CloudError
from visa.states import InstanceState

# Never reached from a session with network = "outside": link-local, cloud metadata services.
ALWAYS_BLOCKED = ("169.254.0.0/16",)


def stage(root: Path, spec: ServerSpec, record: SessionRecord, account: Account | None, *, path: str) -> None:
    """``<root>/<instance uid>``, made whole under a temporary name and renamed into place
    (list_servers never sees half an instance). An OSError leaves nothing behind."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = root / f".creating-{spec.instance_uid}-{secrets.token_hex(4)}"
    staging.mkdir(mode=0o700)
    try:
        run_dir = staging / session.RUN_DIR
        for directory in (staging / session.HOME_DIR, run_dir):
            directory.mkdir(mode=0o700)
        _write_secret(run_dir, spec.secret, "VNC" in spec.protocols, path)
        session.write_xauthority(run_dir / session.XAUTHORITY_FILE, secrets.token_bytes(16))
        if record.mount_mode == "symlinks":
            _make_symlinks(staging, spec)
        if record.isolation == "sandbox":
            sandbox.write_etc(staging, record)
            if account is not None:
                for made in (staging / session.HOME_DIR, run_dir, *run_dir.iterdir()):
                    os.chown(made, account.uid, account.gid, follow_symlinks=False)
        session.write_record(staging / session.INSTANCE_FILE, record)
        os.rename(staging, root / spec.instance_uid)  # atomic
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def launch(
    instance_dir: Path,
    record: SessionRecord,
    cfg: LocalConfig,
    *,
    path: str,
    software_paths: Callable[[], list[str]],
    enforce_cgroups: bool,
) -> None:
    """Start the supervisor of ``instance_dir`` (its programs found in ``path``); it forks
    away, so this waits only for its first half. A sandboxed session gets today's sandbox:
    its arguments (``software_paths`` bound read-only), seccomp filter and cgroups."""
    if record.isolation != "sandbox" and is_root():
        raise CloudError(f"the session of {instance_dir.name} has no sandbox and visa runs as root: "
                         "it would run as root, refused")
    if record.isolation == "sandbox":
        slirp_account, blocked = None, list(record.blocked_networks)
        if record.network == "outside" and is_root():
            # The supervisor makes the network namespace, firewalls it and runs slirp4netns
            # as this account (see supervisor.Supervisor.prepare_network).
            slirp_account = accounts.network_account(cfg.network_account, instance_dir.parent, path, cfg.uid_range)
            blocked = [*ALWAYS_BLOCKED, *cfg.blocked_networks]
        record = record.replace(slirp_account=slirp_account, blocked_networks=blocked)
        # The session's own part: none of the host's paths and accounts the supervisor needs.
        inside = record.replace(slirp_account=None, blocked_networks=[], sandbox_argv=[], sandbox_fds=[],
                                cgroups=[], marker=str(instance_dir))  # fmt: skip
        session.write_record(instance_dir / session.RUN_DIR / session.INSIDE_FILE, inside, mode=0o644)
        python = shutil.which("python3", path="/usr/bin") or sys.executable
        argv, fds = sandbox.sandbox_argv(
            instance_dir, record,
            [python, "-I", session.SANDBOX_SCRIPT, "--inside", f"{session.SANDBOX_RUN}/{session.INSIDE_FILE}"],
            path=path, software_paths=software_paths(),
        )  # fmt: skip
        # Written at every start, so a session restarted after an upgrade gets today's filter.
        seccomp.write(str(instance_dir / session.SECCOMP_FILE))
        made: list[str] = []
        if enforce_cgroups:
            try:
                made = cgroups.make(cfg.cgroup_root, instance_dir.name, cores=record.cores,
                                    memory_mb=record.memory_mb, pids_max=cfg.pids_max)  # fmt: skip
            except OSError as exc:
                raise CloudError(f"cannot set the session's cgroup limits: {exc.strerror}") from exc
        record = record.replace(sandbox_argv=argv, sandbox_fds=fds, seccomp=True, cgroups=made)
        session.write_record(instance_dir / session.INSTANCE_FILE, record)
    argv = [sys.executable, "-I", session.__file__, str(instance_dir)]
    (instance_dir / session.PID_FILE).unlink(missing_ok=True)
    (instance_dir / session.STATUS_FILE).unlink(missing_ok=True)
    env = {
        "PATH": path,
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


def server(instance_dir: Path) -> Server | None:
    """What the directory says of its session; None where it holds none."""
    record = read_record(instance_dir)
    if record is None:
        return None
    status = session.read_json(instance_dir / session.STATUS_FILE) or {}
    stopped = (instance_dir / session.STOPPED_FILE).exists()
    alive = supervisor_of(instance_dir) is not None
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
    created = record.created_at
    published = instance_dir / session.SOCKETS_DIR
    return Server(
        id=instance_dir.name,
        name=record.name,
        state=state,
        address="127.0.0.1",
        sockets={p: str(published / session.SOCKETS[p]) for p in record.protocols if p in session.SOCKETS},
        instance_uid=record.instance_uid,
        fault=fault,
        created_at=datetime.fromisoformat(created) if created else None,
        provider_state={
            "dir": str(instance_dir),
            "display": status.get("display"),
            "isolation": record.isolation,
            "account": record.account.name if record.account is not None else None,
            "mount_mode": record.mount_mode,
            "limitations": record.limitations,
            "vnc_server": record.vnc_server,
        },
    )


def supervisor_of(instance_dir: Path) -> tuple[int, int] | None:
    """The live supervisor's pid and start time, if it runs."""
    found = session.read_pid_file(instance_dir)
    if found is None or not session.pid_alive(*found):
        return None
    return found


def existing_record(instance_dir: Path) -> SessionRecord:
    """The session's record, which must exist."""
    record = read_record(instance_dir)
    if record is None:
        raise CloudError(f"{instance_dir} holds no local instance")
    return record


def read_record(instance_dir: Path) -> SessionRecord | None:
    """The session's record; None where the directory holds none. A record this visa
    cannot read is a CloudError naming the file and the field."""
    try:
        return records.read(instance_dir / session.INSTANCE_FILE)
    except records.RecordError as exc:
        raise CloudError(f"the local session's record {exc}") from None


def remove_stale_x_lock(instance_dir: Path) -> None:
    """An X server killed with -9 leaves its lock and socket behind (outside a sandbox,
    whose /tmp is its own)."""
    try:
        record = records.read(instance_dir / session.INSTANCE_FILE)
    except records.RecordError:
        record = None  # stop and delete still clean up after a record they cannot read
    display = session.read_display(instance_dir / session.RUN_DIR)
    if display is None or (record is not None and record.isolation == "sandbox"):
        return
    lock = Path(f"/tmp/.X{display}-lock")
    try:
        pid = int(lock.read_text().strip())
    except (OSError, ValueError):
        return
    if not session.pid_alive(pid):
        lock.unlink(missing_ok=True)
        Path(f"/tmp/.X11-unix/X{display}").unlink(missing_ok=True)


def _write_secret(run_dir: Path, secret: str, vnc: bool, path: str) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    with os.fdopen(os.open(run_dir / session.SECRET_FILE, flags, 0o600), "w") as out:
        out.write(secret)
    if not vnc:
        return
    # VncAuth uses the first 8 characters only; vncpasswd -f obfuscates them for the server.
    result = subprocess.run(
        [shutil.which("vncpasswd", path=path) or "vncpasswd", "-f"],
        input=(secret + "\n").encode(),
        capture_output=True,
        env={"PATH": path},
        check=False,
        timeout=10,
    )
    if result.returncode or len(result.stdout) != 8:
        raise CloudError(f"vncpasswd failed: {result.stderr.decode(errors='replace').strip()}")
    with os.fdopen(os.open(run_dir / session.VNC_PASSWORD_FILE, flags, 0o600), "wb") as out:
        out.write(result.stdout)


def _make_symlinks(staging: Path, spec: ServerSpec) -> None:
    """Without a sandbox the data are symlinks under the instance directory."""
    for mount in spec.mounts:
        link = staging / session.SYMLINK_DIR / mount.target.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(mount.source)
