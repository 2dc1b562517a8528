"""The unix accounts sessions run as: the owner's recorded account (made on demand when visa is
root, the way JupyterHub's ``LocalAuthenticator`` creates system users, but only the account
recorded in the database as the owner's: never one found by name or uid), the account
slirp4netns runs as, and the owner's home kept across instances."""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import grp
import hashlib
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from visa.clouds.base import ServerSpec
from visa.clouds.local.record import SessionAccount
from visa.errors import CloudError, InvalidInput

ACCOUNT_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# A recorded account may be the facility's own (LDAP names may hold '.' or capitals).
HOST_ACCOUNT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
# A visa username (visa.users.models.USERNAME_PATTERN): a directory name as it stands.
USERNAME_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
# The lowest uid a session may run as, whatever the user's record says: never a system account.
MIN_SESSION_UID = 1000
NOBODY_UID = 65534  # the overflow uid: files of unmapped owners show as its
# Where a session sees its home: <SANDBOX_HOME>/<account>.
SANDBOX_HOME = "/home"


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()  # supplementary gids


def is_root() -> bool:
    return os.geteuid() == 0


def host_account(name: str) -> tuple[str, int]:
    """``name`` and its uid, for an operator recording an account this host already has: only a
    unix account a session may run as (not a system account)."""
    if not HOST_ACCOUNT_RE.match(name):
        raise InvalidInput(f"{name!r} is not a unix account name", field="account")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise InvalidInput(f"this host has no unix account {name}", field="account") from None
    if entry.pw_uid < MIN_SESSION_UID or entry.pw_uid == NOBODY_UID:
        raise InvalidInput(f"{name} is a system account (uid {entry.pw_uid}): refused", field="account")
    return entry.pw_name, entry.pw_uid


def account_name(prefix: str, username: str) -> str:
    """The unix name proposed for ``username``'s account: ``<prefix><username>`` when that is
    a unix name as it stands; any other username gets ``<prefix>-<stem>-<hash>``, whose '-'
    right after the prefix no username yields (a username starts with a letter or '_'), so a
    chosen username never names the account of one that had to change. Only a proposal: the
    account recorded as the user's is the one used (``new_account``)."""
    if ACCOUNT_RE.match(prefix + username) and re.match(r"[a-z_]", username):
        return prefix + username
    digest = hashlib.sha256(username.encode()).hexdigest()[:12]
    stem = re.sub(r"[^a-z0-9_-]", "-", username.lower())[: 32 - len(prefix) - 2 - len(digest)]
    return f"{prefix}-{stem}-{digest}"


def new_account(
    username: str,
    uid: int | None,
    taken_uids: Collection[int],
    taken_gids: Collection[int],
    *,
    prefix: str,
    uid_range: tuple[int, int],
) -> tuple[str, int]:
    """The account to record for a user who has none: the facility's account of their own
    ``uid`` when the host has one, else ``account_name`` with their uid or a free one of
    ``uid_range`` outside every other visa user's uids and gids. A name or uid the host
    already gives another account is refused, never adopted."""
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
            low, high = uid_range
            if low <= uid <= high:
                raise CloudError(
                    f"{username}'s uid {uid} is the unix account {entry.pw_name}, inside the local cloud's "
                    "uid_range, from which visa gave accounts to others: refused (see `visa check-config`)"
                )
            if not HOST_ACCOUNT_RE.match(entry.pw_name):
                raise CloudError(f"the unix account of uid {uid} has a name visa cannot use: refused")
            return entry.pw_name, uid  # the facility's account: the uid is the user's own
    else:
        uid = free_id(uid_range, taken | set(taken_gids))
    name = account_name(prefix, username)
    try:
        pwd.getpwnam(name)
    except KeyError:
        return name, uid
    raise CloudError(
        f"the unix account {name} exists but is not recorded as {username}'s: refused "
        "(an operator removes it, or records it as theirs)"
    )


def owner_account(spec: ServerSpec, root: Path, path: str) -> Account:
    """The owner's recorded unix account (``spec.account``), made now if it does not exist
    (useradd and groupadd found in ``path``; ``root`` holds the lock)."""
    if spec.account is None:
        raise CloudError(f"no unix account is recorded for {spec.owner_username or 'the owner'}: refused")
    name, uid = spec.account
    if not HOST_ACCOUNT_RE.match(name) or uid < MIN_SESSION_UID:
        raise CloudError(f"the recorded unix account {name!r} (uid {uid}) cannot run a session: refused")
    if spec.owner_uid is not None and spec.owner_uid != uid:
        raise CloudError(
            f"{spec.owner_username}'s recorded unix account {name} has uid {uid}, not the user's "
            f"uid {spec.owner_uid}: refused"
        )
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(root / ".accounts.lock"):
        for _attempt in range(5):
            account = _existing_account(name, uid, spec)
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
                _run_admin(["groupadd", "-g", str(gid), name], path)
            else:
                if spec.owner_gid is None and group != name:
                    raise CloudError(f"gid {gid} is the group {group}'s, not {name}: refused")
            _run_admin(
                ["useradd", "-u", str(uid), "-g", str(gid), "-M", "-N", "-d", f"{SANDBOX_HOME}/{name}",
                 "-s", "/bin/bash", "-c", f"visa session user {spec.owner_username}"[:60], name],
                path,
            )  # fmt: skip
        raise CloudError(f"could not create the unix account {name}")


def _existing_account(name: str, uid: int, spec: ServerSpec) -> Account | None:
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


def free_id(uid_range: tuple[int, int], taken: Collection[int] = ()) -> int:
    """A uid of ``uid_range`` no account or group of the host has, nor any visa user."""
    low, high = uid_range
    used = {p.pw_uid for p in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()} | set(taken)
    for candidate in range(low, high + 1):
        if candidate not in used:
            return candidate
    raise CloudError(f"no free uid left in the local cloud's uid_range {low}-{high}")


def system_account(name: str, comment: str, path: str) -> pwd.struct_passwd:
    """The system account ``name`` (no home, no shell), made if missing; one another visa made
    meanwhile is taken as it is (the caller checks whose it is)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        _run_admin(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", "--comment", comment, name], path)  # fmt: skip
        return pwd.getpwnam(name)


def network_account(name: str, root: Path, path: str, uid_range: tuple[int, int]) -> list[int]:
    """uid and gid of the account slirp4netns runs as: a system account of its own, never
    root nor a session's (its user namespace owns the sessions' network namespaces)."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(root / ".accounts.lock"):
        entry = system_account(name, "visa session networks", path)
    low, high = uid_range
    if entry.pw_uid == 0 or entry.pw_gid == 0 or low <= entry.pw_uid <= high:
        raise CloudError(f"network_account {name} is root or a session's account: refused")
    return [entry.pw_uid, entry.pw_gid]


def sandbox_account(account: Account | None) -> SessionAccount:
    """Who the session is in its sandbox: the owner's account, else visa's own uid (mapped)."""
    if account is not None:
        return SessionAccount(account.name, account.uid, account.gid, list(account.groups))
    # In a user namespace only visa's own uid and gid map: no supplementary groups.
    return SessionAccount(_login_name(), os.getuid(), os.getgid(), [])


def home_dir(spec: ServerSpec, account: Account | None, root: Path, prefix: str) -> Path:
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
            prefix + owner if USERNAME_RE.match(owner) else account_name(prefix, owner))  # fmt: skip
        home = root / ".homes" / name
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        (root / ".homes").mkdir(mode=0o700, exist_ok=True)
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


def _login_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return getpass.getuser()
