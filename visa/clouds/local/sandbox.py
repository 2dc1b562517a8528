"""The session's bubblewrap sandbox: what this machine lets visa enforce (the isolation
report), the arguments that build the sandbox, the files of its ``/etc``, and the host
directories it may see."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from visa.clouds.local import cgroups
from visa.clouds.local import supervisor as session
from visa.clouds.local.accounts import Account, is_root
from visa.clouds.local.config import LocalConfig
from visa.clouds.local.record import SessionAccount, SessionRecord
from visa.errors import CloudError, InvalidInput

# The files of /etc a desktop, a shell and JupyterLab read; nothing else of the host's /etc.
SANDBOX_ETC = (
    "alternatives", "bash.bashrc", "ca-certificates", "ca-certificates.conf", "fonts", "inputrc",
    "jupyter", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "locale.alias", "localtime", "mime.types",
    "nsswitch.conf", "profile", "profile.d", "python3", "ssl", "terminfo", "timezone", "vim", "X11", "xdg",
)  # fmt: skip


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


def isolation(cfg: LocalConfig, *, isolate: bool, path: str) -> Isolation:
    """What this machine lets visa enforce for a cloud configured so (``isolate``: its config
    does not turn isolation off; ``path``: where its programs are found)."""
    # Named explicitly: who has visa's unix name as a visa username is nobody in particular.
    operators = tuple(cfg.operator_usernames or ())
    reasons: list[str] = []
    mode: Literal["sandbox", "none"] = "none"
    accounts = False
    bwrap = shutil.which("bwrap", path=path)
    if not isolate:
        reasons.append("isolation is off in the cloud's config")
    elif bwrap is None:
        reasons.append("bubblewrap is not installed (`apt-get install bubblewrap`)")
    elif not _bwrap_has(bwrap, "--bind-fd"):
        reasons.append("bubblewrap is too old (no --bind-fd, which data directories are bound with): "
                       "install bubblewrap 0.5 or later")
    elif is_root():
        missing = [p for p in ("setpriv", "nsenter", "useradd", "groupadd") if not shutil.which(p, path=path)]
        if missing:
            reasons.append(f"{', '.join(missing)} missing (`apt-get install util-linux passwd`)")
        elif _probe_bwrap(bwrap, userns=False):
            mode, accounts = "sandbox", True
        else:
            reasons.append("bubblewrap cannot make namespaces here")
    elif _probe_bwrap(bwrap, userns=True):
        mode = "sandbox"
    else:
        reasons.append("not root and no unprivileged user namespaces: bubblewrap cannot run")
    with_cgroups = False
    if mode == "sandbox":
        problem = cgroups.problem(cfg.cgroup_root)
        if problem:
            reasons.append(f"cores and memory are not enforced: {problem}")
        else:
            with_cgroups = True
    network = "without network"
    if cfg.network == "outside":
        if is_root():
            network = ("reaching the outside network through an unprivileged slirp4netns (never the host's "
                       "own addresses, 169.254.0.0/16 or blocked_networks)")  # fmt: skip
        else:
            network = "reaching the outside network through slirp4netns (not the host's loopback)"
            reasons.append("network = outside without root: the host's other addresses, 169.254.0.0/16 and "
                           "blocked_networks are reachable from sessions")  # fmt: skip
        if shutil.which("slirp4netns", path=path) is None:
            reasons.append("network = outside needs slirp4netns (`apt-get install slirp4netns`)")
    as_root = mode == "none" and is_root()
    return Isolation(mode, accounts, with_cgroups, tuple(reasons), () if as_root else operators, network, as_root)


def _probe_bwrap(bwrap: str, *, userns: bool) -> bool:
    argv = [bwrap, *(["--unshare-user"] if userns else []), "--unshare-pid", "--unshare-net",
            "--unshare-ipc", "--ro-bind", "/usr", "/usr", *_usr_links(), "--", "true"]  # fmt: skip
    try:
        return subprocess.run(argv, capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


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


def groups_option(acct: SessionAccount) -> list[str]:
    """setpriv's groups: the account's supplementary gids (the facility's groups), else none."""
    groups = [str(int(g)) for g in acct.groups]
    return ["--groups", ",".join(groups)] if groups else ["--clear-groups"]


def sandbox_argv(
    instance_dir: Path, record: SessionRecord, argv: list[str], *, path: str, software_paths: list[str]
) -> tuple[list[str], list[int]]:
    """bwrap and its arguments to run ``argv`` as the session's account in its sandbox,
    and the positions of the data directories among them: the supervisor opens each
    (``open_dir``, no link followed) and puts the descriptor there (``--bind-fd``).
    Programs are found in ``path``; ``software_paths`` are bound read-only."""
    acct, home = _account_and_home(record)
    bwrap = shutil.which("bwrap", path=path) or "bwrap"
    out = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
           "--unshare-cgroup-try", "--hostname", record.name[:63]]  # fmt: skip
    # With slirp_account the supervisor starts bwrap in the network namespace it made.
    out += [] if record.slirp_account else ["--unshare-net"]
    root = is_root()
    if not root:
        out += ["--unshare-user", "--uid", str(acct.uid), "--gid", str(acct.gid), "--cap-drop", "ALL"]
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
    for software in software_paths:
        bind("--ro-bind", software, software)
    bind("--bind", record.home_dir or str(instance_dir / session.HOME_DIR), home)
    bind("--bind", str(instance_dir / session.RUN_DIR), session.SANDBOX_RUN)
    bind("--ro-bind", session.__file__, session.SANDBOX_SCRIPT)
    bind("--ro-bind", str(Path(session.__file__).with_name("record.py")), session.SANDBOX_RECORD)
    bind("--ro-bind", str(Path(session.__file__).with_name("printer.py")), session.SANDBOX_PRINTER)
    bind("--ro-bind", str(Path(session.__file__).with_name("videoproxy.py")), session.SANDBOX_VIDEOPROXY)
    fds = []
    for mount in record.mounts:
        bind("--ro-bind-fd" if mount.read_only else "--bind-fd", mount.source, mount.target)
        fds.append(len(out) - 2)
    out += ["--chdir", home, "--"]
    if root:
        setpriv = shutil.which("setpriv", path=path) or "setpriv"
        out += [setpriv, "--reuid", str(acct.uid), "--regid", str(acct.gid),
                *groups_option(acct), "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]  # fmt: skip
    return out + argv, fds


def write_etc(staging: Path, record: SessionRecord) -> None:
    """passwd and group naming only the session's account, and a hostname."""
    acct, home = _account_and_home(record)
    etc = staging / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"{acct.name}:x:{acct.uid}:{acct.gid}::{home}:/bin/bash\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    extra = "".join(f"visa-g{g}:x:{g}:{acct.name}\n" for g in acct.groups if g != acct.gid)
    (etc / "group").write_text(f"root:x:0:\n{acct.name}:x:{acct.gid}:\n{extra}nogroup:x:65534:\n")
    (etc / "hostname").write_text(f"{record.name}\n")
    (etc / "hosts").write_text(f"127.0.0.1\tlocalhost {record.name}\n::1\tlocalhost\n")
    # slirp4netns answers DNS at 10.0.2.3; without network there is nothing to resolve.
    (etc / "resolv.conf").write_text("nameserver 10.0.2.3\n" if record.network == "outside" else "")
    for child in etc.iterdir():
        child.chmod(0o644)


def _account_and_home(record: SessionRecord) -> tuple[SessionAccount, str]:
    if record.account is None or record.home is None:
        raise CloudError(f"the record of {record.instance_uid} names no sandbox account and home")
    return record.account, record.home


def prepare_data_dir(source: str, *, writable: bool, account: Account | None) -> None:
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


def software_paths(cfg: LocalConfig, jupyter_program: str, *, root: Path, data_dir: Path | None,
                   video_program: str | None = None) -> list[str]:  # fmt: skip
    """Python's prefixes (JupyterLab runs from ``jupyter_program``'s, the desktop's video proxy
    from ``video_program``'s) and configured extras, when outside /usr: only absolute
    directories, and never one that shows visa's own files (its ``data_dir``, the sessions'
    ``root``, its configuration file, its working directory). Raises ``InvalidInput`` naming
    the setting and the path."""
    found: list[tuple[str, str]] = [(path, "sandbox_paths") for path in cfg.sandbox_paths]
    prefixes = [(sys.prefix, "jupyter_command"), (sys.base_prefix, "jupyter_command")]
    for program, setting in ((jupyter_program, "jupyter_command"), (video_program, "video_python")):
        if program and os.path.isabs(program):  # a bare name found nowhere binds nothing
            prefixes.append((os.path.dirname(os.path.dirname(program)), setting))
            prefixes.append((os.path.dirname(os.path.dirname(os.path.realpath(program))), setting))
    for prefix, setting in prefixes:
        for candidate in (prefix, os.path.realpath(prefix)):
            if os.path.isabs(candidate) and candidate not in ("/", "/usr") and not candidate.startswith("/usr/"):
                found.append((os.path.normpath(candidate), setting))
    unique: list[str] = []
    for path, setting in found:
        if path in unique or not os.path.isdir(path):
            continue
        problem = _shows_visa(os.path.realpath(path), root, data_dir)
        if problem:
            raise InvalidInput(f"local cloud config {setting}: {path} would show sessions {problem}", field=setting)
        unique.append(path)
    return unique


def _shows_visa(path: str, root: Path, data_dir: Path | None) -> str | None:
    """What of visa's own a directory bound into sessions is or holds, if anything."""
    private = [("the sessions' root " + str(root), str(root))]
    if data_dir is not None:
        data = os.path.realpath(data_dir)
        private.insert(0, ("visa's data directory " + data, data))
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
