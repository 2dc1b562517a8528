"""Files in and out of an instance: listing, download and upload over SFTP as the owner.

The transfer runs as the owner's unix account, never as root: on a machine with sshd, visa
logs in as the owner with its own key (``probe_keys``), which the owner's authorized_keys
forces to run ``sftp-server`` and nothing else, and accepts only the host key visa gave the
instance (``provisioning/host_keys``); a local session runs ``sftp-server`` in its sandbox
(``Provider.open_sftp``). Either way the same code below talks to it.

The machine is hostile: it controls its file system and what its SFTP server answers. So

* a path is checked before it is sent (absolute, no ``..``, inside a root: the owner's home
  or a writable data area), and the machine's own resolution of it (SFTP ``realpath``) is
  checked again, so a symlink that leads out is refused;
* an upload never follows a link at its target: a new file is created exclusively
  (``O_EXCL`` does not follow links), an existing one must be a regular file by ``lstat``;
* sizes are the machine's word: a download sends at most the size announced in its headers
  and stops there, whatever more the machine sends; listings stop at ``max_listing``;
  names that are not UTF-8 are left out and counted; packets are bounded (``clouds/sftp``).

Each transfer is audited with who, which file and how many bytes moved.
"""

from __future__ import annotations

import contextlib
import functools
import re
import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, ParamSpec, TypeVar

import paramiko
from paramiko.sftp import SFTPError
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.audit import service as audit
from visa.clock import Clock
from visa.clouds.sftp import BoundedSFTP, FileAccess
from visa.errors import CloudError, Conflict, InvalidInput, NotFound, RangeNotSatisfiable, TooLarge
from visa.instances import probe_keys
from visa.instances.models import Instance, InstanceState
from visa.instances.spec import boot_spec, site_for_instance
from visa.policy import require
from visa.provisioning import host_keys, names
from visa.provisioning.mounts import instance_mounts
from visa.services import Services
from visa.settings import Settings

MAX_PATH = 4096
RUNNING = (InstanceState.ACTIVE, InstanceState.PARTIALLY_ACTIVE)
# One window of pipelined reads (paramiko asks for 32 KiB per request): memory per download.
WINDOW_REQUESTS = 32
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Where the print queue of an instance writes its PDFs, in the owner's home, and how many are shown.
PRINTED_FOLDER = "PDF"
PRINTED_MAX = 20
P = ParamSpec("P")
T = TypeVar("T")


def machine_faults(fn: Callable[P, T]) -> Callable[P, T]:
    """A machine that hangs up, goes silent or speaks nonsense fails the request with a
    CloudError (502), never an internal error."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except (EOFError, TimeoutError, paramiko.SSHException, SFTPError, struct.error) as exc:
            raise CloudError(f"the instance's file server failed: {exc or type(exc).__name__}") from exc
        except OSError as exc:  # what the machine refused midway (its disk full, a quota)
            raise CloudError(f"the instance refused: {exc.strerror or exc}") from exc

    return wrapper


# ---------------------------------------------------------------------- paths


def clean_path(raw: str | None, field: str = "path") -> str:
    """A path as the user gave it, made canonical: absolute, no ``..``, no empty parts."""
    if not raw:
        raise InvalidInput(f"{field}: a path is required", field=field)
    if len(raw) > MAX_PATH:
        raise InvalidInput(f"{field}: longer than {MAX_PATH} characters", field=field)
    if "\x00" in raw:
        raise InvalidInput(f"{field}: contains a NUL character", field=field)
    if not raw.startswith("/"):
        raise InvalidInput(f"{field}: must be absolute (start with /)", field=field)
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidInput(f"{field}: '..' is not allowed", field=field)
    return "/" + "/".join(parts)


def inside(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root if root == "/" else root + "/")


def _check_inside(path: str, roots: tuple[str, ...], field: str = "path") -> None:
    if not any(inside(path, r) for r in roots):
        raise InvalidInput(
            f"{field}: {path} is outside your home and processed data ({', '.join(roots)})", field=field
        )


def _realpath(access: FileAccess, path: str) -> str:
    """Where the machine says the path leads (every link followed), checked to stay inside."""
    try:
        resolved = access.sftp.normalize(path)
    except OSError as exc:
        raise NotFound(f"path: {path} does not exist", field="path") from exc
    if not isinstance(resolved, str) or not resolved.startswith("/") or "\x00" in resolved:
        raise CloudError("the machine answered a path that is not one")
    resolved = clean_path(resolved)
    roots = tuple(access.roots) + _resolved_roots(access)
    if not any(inside(resolved, r) for r in roots):
        raise InvalidInput(f"path: {path} leads outside your home and processed data (a link to {resolved})",
                           field="path")
    return resolved


def _resolved_roots(access: FileAccess) -> tuple[str, ...]:
    """The roots as the machine resolves them (a home may itself be a link, /home -> /nfs/home)."""
    cached = getattr(access, "_resolved", None)
    if cached is None:
        found = []
        for root in access.roots:
            with contextlib.suppress(OSError, InvalidInput):
                resolved = access.sftp.normalize(root)
                if isinstance(resolved, str) and resolved.startswith("/") and resolved != "/":
                    found.append(clean_path(resolved))
        cached = tuple(found)
        access._resolved = cached  # type: ignore[attr-defined]
    return cached


# ---------------------------------------------------------------------- opening


def _running(instance: Instance) -> None:
    if instance.state not in RUNNING:
        raise Conflict(f"the instance is {instance.state.value.lower()}: files move only while it runs")


def roots_of(instance: Instance, settings: Settings, clock: Clock) -> tuple[str, ...]:
    """The owner's home and the writable data areas, as cloud-init made them on the machine."""
    machine = boot_spec(instance, now=clock.now())
    site = site_for_instance(instance, settings.provisioning)
    username = names.username(machine.owner.username, "username")
    home = names.absolute_path(machine.owner.home_path or f"{site.home_root}/{username}", "home_path")
    data = tuple(m.target for m in instance_mounts(machine, site=site) if not m.read_only)
    return (clean_path(home), *data)


class _RefuseHostKey(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise paramiko.SSHException(f"host key of {hostname} is not the one visa gave the instance")


def ssh_access(settings: Settings, instance: Instance, roots: tuple[str, ...], *, port: int | None = None,
               timeout: float | None = None) -> FileAccess:
    """SFTP as the owner over SSH: visa's key, the instance's pinned host key, nothing else."""
    timeout = timeout or settings.transfers.timeout_seconds
    host = instance.address
    if not host:
        raise Conflict("the instance has no address yet")
    port = port or int((instance.provider_state or {}).get("ports", {}).get("ssh") or 22)
    username = names.username(instance.owner.username, "username")
    client = paramiko.SSHClient()
    name = host if port == 22 else f"[{host}]:{port}"
    client.get_host_keys().add(name, "ssh-ed25519", host_keys.pinned(settings.resolved_secret_key(), instance.uid))
    client.set_missing_host_key_policy(_RefuseHostKey())
    try:
        client.connect(host, port, username=username, pkey=probe_keys.private_key(settings), timeout=timeout,
                       banner_timeout=timeout, auth_timeout=timeout, allow_agent=False, look_for_keys=False)
        transport = client.get_transport()
        assert transport is not None
        channel = transport.open_session(timeout=timeout)
        channel.settimeout(timeout)
        # The key's forced command runs whatever is asked; asking for it by name works on an image
        # whose sshd has no sftp Subsystem line too.
        channel.exec_command(settings.provisioning.sftp_server)
        sftp = BoundedSFTP(channel)
    except (OSError, paramiko.SSHException, EOFError) as exc:
        client.close()
        raise CloudError(f"could not open the instance's files over SSH: {exc}", transient=True) from exc
    return FileAccess(sftp, roots, [client.close])


def open_access(actor: Actor, services: Services, instance: Instance, *, write: bool) -> FileAccess:
    """An SFTP session on the instance as its owner: the provider's, or visa's own SSH. The
    actor's right (``instance.files.read`` or ``.write``) is checked before anything connects."""
    require(actor, "instance.files.write" if write else "instance.files.read", instance)
    _running(instance)
    provider = services.provider(instance.cloud.name)
    try:
        access = provider.open_sftp(instance.cloud_server_id or instance.uid)
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise CloudError(f"could not open the instance's files: {exc}") from exc
    if access is not None:
        return access
    return ssh_access(services.settings, instance, roots_of(instance, services.settings, services.clock))


# ---------------------------------------------------------------------- listing


@dataclass(frozen=True)
class Entry:
    name: str
    path: str
    kind: str  # file, dir, link, other
    size: int | None
    modified: int | None


@dataclass(frozen=True)
class Listing:
    path: str
    roots: tuple[str, ...]
    entries: list[Entry]
    truncated: bool
    skipped: int  # names that are not UTF-8


def _kind(mode: int | None) -> str:
    if mode is None:
        return "other"
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


@machine_faults
def list_dir(actor: Actor, instance: Instance, access: FileAccess, raw_path: str | None, settings: Settings) -> Listing:
    require(actor, "instance.files.read", instance)
    _running(instance)
    path = clean_path(raw_path) if raw_path else access.roots[0]
    _check_inside(path, access.roots)
    resolved = _realpath(access, path)
    entries: list[Entry] = []
    skipped = 0
    truncated = False
    limit = settings.transfers.max_listing
    try:
        for raw_name, attrs in access.sftp.scan_dir(resolved):
            try:
                name = raw_name.decode("utf-8")
            except UnicodeDecodeError:
                skipped += 1
                continue
            if "/" in name or "\x00" in name or not name:
                skipped += 1  # no file system makes these: the server lies
                continue
            if len(entries) >= limit:
                truncated = True
                break
            size = attrs.st_size if isinstance(attrs.st_size, int) and attrs.st_size >= 0 else None
            mtime = attrs.st_mtime if isinstance(attrs.st_mtime, int) else None
            child = resolved.rstrip("/") + "/" + name
            entries.append(Entry(name, child, _kind(attrs.st_mode), size, mtime))
    except OSError as exc:
        raise InvalidInput(f"path: {path} cannot be listed: {exc.strerror or exc}", field="path") from exc
    entries.sort(key=lambda e: (e.kind != "dir", e.name.lower(), e.name))
    return Listing(resolved, access.roots, entries, truncated, skipped)


# ---------------------------------------------------------------------- printed PDFs


@dataclass(frozen=True)
class Printed:
    name: str
    path: str
    size: int
    modified: int | None
    downloadable: bool  # within the download limit


@dataclass(frozen=True)
class PrintedListing:
    folder: str | None
    files: list[Printed]
    unavailable: str | None = None  # why the machine's files could not be listed now


def printed(actor: Actor, services: Services, instance: Instance) -> PrintedListing:
    """``list_printed`` on a connection of its own. Polled by the desktop page while it is
    open: a machine that is not running or whose file server fails is an answer
    (``unavailable``, the reason), not an error; a refusal of the actor is."""
    require(actor, "instance.files.read", instance)
    if instance.state not in RUNNING:
        return PrintedListing(None, [], f"the instance is {instance.state.value.lower()}")
    try:
        with open_access(actor, services, instance, write=False) as access:
            return list_printed(actor, instance, access, services.settings)
    except CloudError as exc:
        return PrintedListing(None, [], exc.message)


@machine_faults
def list_printed(actor: Actor, instance: Instance, access: FileAccess, settings: Settings) -> PrintedListing:
    """The PDFs printed inside the instance, newest first: the print queue (cups-pdf on a VM,
    the session's own scheduler on the local cloud) writes them in the owner's ``~/PDF``.

    What the machine keeps there is its own: only regular files (by the listing's ``lstat``:
    a link is never offered, whatever it leads to) named ``*.pdf`` with printable UTF-8
    names are listed, at most ``printed_max`` of them; a folder that is not one (a link to
    another, a file) lists nothing. Sizes are the machine's word: a file over the download
    limit is listed as not downloadable (and the download refuses it anyway)."""
    require(actor, "instance.files.read", instance)
    _running(instance)
    folder = access.roots[0].rstrip("/") + "/" + PRINTED_FOLDER
    try:
        info = access.sftp.lstat(folder)
    except OSError:
        return PrintedListing(folder, [])  # nothing printed yet (or not readable)
    if info.st_mode is None or not stat.S_ISDIR(info.st_mode):
        return PrintedListing(folder, [])
    found: list[Printed] = []
    limit = settings.transfers.max_download_bytes
    try:
        for count, (raw_name, attrs) in enumerate(access.sftp.scan_dir(folder)):
            if count >= settings.transfers.max_listing:
                break
            try:
                name = raw_name.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if not name.lower().endswith(".pdf") or "/" in name or _CONTROL.search(name) or len(name) > 255:
                continue
            if attrs.st_mode is None or not stat.S_ISREG(attrs.st_mode):
                continue
            size = attrs.st_size if isinstance(attrs.st_size, int) and attrs.st_size >= 0 else 0
            mtime = attrs.st_mtime if isinstance(attrs.st_mtime, int) else None
            found.append(Printed(name, f"{folder}/{name}", size, mtime, size <= limit))
    except OSError:
        return PrintedListing(folder, [])  # the folder went away (or was swapped) meanwhile
    found.sort(key=lambda p: (-(p.modified or 0), p.name))
    return PrintedListing(folder, found[:PRINTED_MAX])


# ---------------------------------------------------------------------- download


@dataclass
class Download:
    path: str
    name: str
    size: int  # as the machine announced it
    start: int
    length: int
    handle: paramiko.SFTPFile


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range as (start, length); None: the whole file. Unsatisfiable: 416."""
    if not header:
        return None
    match = re.fullmatch(r"bytes=(\d{0,19})-(\d{0,19})", header.strip())
    if match is None or match.group(0) == "bytes=-":
        raise InvalidInput("Range: only one range of the form bytes=START-[END] or bytes=-SUFFIX",
                           field="Range")
    first, last = match.groups()
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        if last and int(last) < start:
            raise InvalidInput("Range: its end is before its start", field="Range")
    else:
        suffix = int(last)
        start, end = max(0, size - suffix), size - 1
    if start >= size:
        raise RangeNotSatisfiable(f"Range: starts at {start}, the file has {size} bytes", size=size)
    return start, end - start + 1


@machine_faults
def open_download(actor: Actor, instance: Instance, access: FileAccess, raw_path: str | None,
                  range_header: str | None, settings: Settings) -> Download:
    require(actor, "instance.files.read", instance)
    _running(instance)
    path = clean_path(raw_path)
    _check_inside(path, access.roots)
    resolved = _realpath(access, path)
    try:
        handle = access.sftp.open(resolved, "rb")
    except OSError as exc:
        raise InvalidInput(f"path: {path} cannot be read: {exc.strerror or exc}", field="path") from exc
    try:
        info = handle.stat()
        if info.st_mode is None or not stat.S_ISREG(info.st_mode):
            raise InvalidInput(f"path: {path} is not a regular file", field="path")
        size = info.st_size if isinstance(info.st_size, int) and info.st_size >= 0 else 0
        limit = settings.transfers.max_download_bytes
        if size > limit:
            raise TooLarge(f"path: {path} has {size} bytes, more than the {limit} a download may have",
                           field="path", size=size, limit=limit)
        wanted = parse_range(range_header, size)
        start, length = wanted if wanted is not None else (0, size)
    except BaseException:
        handle.close()
        raise
    name = resolved.rsplit("/", 1)[-1]
    return Download(resolved, name, size, start, length, handle)


def stream(download: Download, chunk: int) -> Iterator[bytes]:
    """The file's bytes from ``start``, ``length`` at most, in pipelined windows: memory stays
    one window whatever the file's size; a machine that sends more than it announced is cut off."""
    offset, remaining = download.start, download.length
    window = WINDOW_REQUESTS * download.handle.MAX_REQUEST_SIZE
    while remaining > 0:
        span = min(window, remaining)
        pieces = [(offset + i, min(chunk, span - i)) for i in range(0, span, chunk)]
        got = 0
        try:
            window_data = list(_window(download.handle, pieces))
        except (OSError, EOFError, paramiko.SSHException, SFTPError, struct.error):
            return  # headers are sent: a short body (and the audit's complete=False) says it failed
        for data in window_data:
            if not data:
                return  # the file ended early: the machine's size was a lie (or it shrank)
            data = data[:remaining]
            got += len(data)
            remaining -= len(data)
            yield data
            if remaining <= 0:
                return
        if got < span:
            return
        offset += span


def _window(handle: paramiko.SFTPFile, pieces: list[tuple[int, int]]) -> Iterator[bytes]:
    yield from handle.readv(pieces)


# ---------------------------------------------------------------------- upload


@dataclass
class Upload:
    path: str
    offset: int
    length: int
    handle: paramiko.SFTPFile


@machine_faults
def open_upload(actor: Actor, instance: Instance, access: FileAccess, raw_path: str | None, *,
                offset: int, length: int | None, overwrite: bool, settings: Settings) -> Upload:
    """Check everything, then open the target: nothing is written before the limits pass."""
    require(actor, "instance.files.write", instance)
    _running(instance)
    path = clean_path(raw_path)
    _check_inside(path, access.roots)
    if path in {r.rstrip("/") for r in access.roots}:
        raise InvalidInput("path: name a file inside the folder, not the folder itself", field="path")
    parent, name = path.rsplit("/", 1)
    if _CONTROL.search(name):
        raise InvalidInput("path: the file name contains control characters", field="path")
    if length is None:
        raise InvalidInput("Content-Length: required (the size is checked before anything is written)",
                           field="Content-Length")
    if offset < 0:
        raise InvalidInput("offset: must be 0 or more", field="offset")
    limit = settings.transfers.max_upload_bytes
    if offset + length > limit:
        raise TooLarge(f"the file would have {offset + length} bytes, more than the {limit} an upload may make",
                       field="Content-Length", size=offset + length, limit=limit)
    folder = _realpath(access, parent or "/")
    target = folder.rstrip("/") + "/" + name
    sftp = access.sftp
    try:
        existing = sftp.lstat(target)
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        raise InvalidInput(f"path: {path} cannot be written: {exc.strerror or exc}", field="path") from exc
    if existing is not None:
        mode = existing.st_mode or 0
        if stat.S_ISLNK(mode):
            raise InvalidInput(f"path: {path} is a symbolic link: uploads never follow links", field="path")
        if not stat.S_ISREG(mode):
            raise InvalidInput(f"path: {path} exists and is not a regular file", field="path")
    try:
        if offset:
            if existing is None:
                raise Conflict(f"offset: {path} does not exist, there is nothing to resume", field="offset")
            if existing.st_size != offset:
                raise Conflict(f"offset: {path} has {existing.st_size} bytes, not {offset}: resume from its size",
                               field="offset", size=existing.st_size)
            handle = sftp.open(target, "r+b")
            handle.seek(offset)
        elif existing is None:
            handle = sftp.open(target, "wxb")  # O_CREAT|O_EXCL: never through a link swapped in
        elif overwrite:
            handle = sftp.open(target, "r+b")
            handle.truncate(0)
        else:
            raise Conflict(f"path: {path} exists (upload with overwrite to replace it)", field="path")
    except OSError as exc:
        raise InvalidInput(f"path: {path} cannot be written: {exc.strerror or exc}", field="path") from exc
    handle.set_pipelined(True)
    return Upload(target, offset, length, handle)


@machine_faults
def receive(upload: Upload, body: IO[bytes], chunk: int) -> int:
    """Copy the request body to the file, ``chunk`` bytes at a time; the bytes written."""
    written = 0
    while written < upload.length:
        data = body.read(min(chunk, upload.length - written))
        if not data:
            break
        upload.handle.write(data)
        written += len(data)
    upload.handle.close()  # waits for the machine's acknowledgements: errors surface here
    return written


# ---------------------------------------------------------------------- audit


def record_transfer(actor: Actor, session: Session, clock: Clock, instance_uid: str, direction: str,
                    path: str, nbytes: int, *, offset: int = 0, complete: bool = True) -> None:
    """One audit event per transfer: who, which file, how many bytes, whether it finished."""
    audit.record(actor, session, clock, f"instance.file.{direction}", target_type="instance",
                 target_id=instance_uid, path=path[:1024], bytes=nbytes, offset=offset, complete=complete)
