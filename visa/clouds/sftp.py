"""SFTP to a machine, with what comes back from it bounded: the other end is hostile.

paramiko's client trusts the server's packet lengths (up to 16 MB each) and a directory
listing's entry count; a machine that lies would make visa's web process allocate or loop
for as long as it likes. :class:`BoundedSFTP` reads no packet larger than ``MAX_PACKET``
and lists directories itself, never trusting a count beyond what the packet holds.

:class:`FileAccess` is what a provider (or visa's own SSH, for machines with sshd) hands
the transfer service: an SFTP session as the owner's account and the roots the user may
browse, the home first.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import paramiko
from paramiko.common import byte_ord
from paramiko.sftp import CMD_CLOSE, CMD_HANDLE, CMD_NAME, CMD_OPENDIR, CMD_READDIR, CMD_STATUS, SFTPError
from paramiko.sftp_attr import SFTPAttributes

# OpenSSH's sftp-server answers reads of at most 256 KiB; paramiko asks for 32 KiB. Anything
# bigger is a machine that lies.
MAX_PACKET = 512 * 1024


class BoundedSFTP(paramiko.SFTPClient):
    """paramiko's SFTP client with every packet's size bounded, and every wait (the socket or
    channel has a timeout: a machine that goes silent raises ``TimeoutError``)."""

    def _read_all(self, n: int) -> bytes:
        out = bytearray()
        while n > 0:
            x = self.sock.recv(n)
            if not x:
                raise EOFError()
            out += x
            n -= len(x)
        return bytes(out)

    def _read_packet(self) -> tuple[int, bytes]:
        header = self._read_all(4)
        size = struct.unpack(">I", header)[0]
        if size > MAX_PACKET:
            raise SFTPError(f"the machine sent a packet of {size} bytes (at most {MAX_PACKET})")
        data = self._read_all(size)
        if size == 0:
            return 0, b""
        return byte_ord(data[0]), data[1:]

    def scan_dir(self, path: str) -> Iterator[tuple[bytes, SFTPAttributes]]:
        """The entries of a directory as (raw name, attributes), lazily, one READDIR at a time.

        Raw bytes: a machine may name files in any encoding (the caller decides what to show).
        ``.`` and ``..`` are left out. Raises ``IOError`` as paramiko does for a refusal.
        """
        t, msg = self._request(CMD_OPENDIR, path)
        if t != CMD_HANDLE:
            raise SFTPError("expected a handle")
        handle = msg.get_binary()
        try:
            while True:
                try:
                    t, msg = self._request(CMD_READDIR, handle)
                except EOFError as exc:
                    if exc.args:  # the server's end-of-directory status (a closed connection has no text)
                        return
                    raise
                if t == CMD_STATUS:
                    self._convert_status(msg)  # raises: EOF or a refusal
                    return
                if t != CMD_NAME:
                    raise SFTPError("expected names")
                count = msg.get_int()
                # Every entry takes at least 12 bytes (two empty strings and the flags): a
                # count the packet cannot hold is a lie.
                if count * 12 > MAX_PACKET:
                    raise SFTPError(f"the machine claims {count} entries in one answer")
                for _ in range(count):
                    name = msg.get_binary()
                    msg.get_binary()  # the long name: ls -l text, not used
                    attrs = SFTPAttributes._from_msg(msg)
                    if name not in (b".", b".."):
                        yield name, attrs
        finally:
            with contextlib.suppress(Exception):
                self._request(CMD_CLOSE, handle)


@dataclass
class FileAccess:
    """An SFTP session on a machine as the owner's unix account, and where the user may go."""

    sftp: BoundedSFTP
    # Absolute paths inside the machine: the home first, then the writable data areas.
    roots: tuple[str, ...]
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.sftp.close()
        for closer in self._closers:
            with contextlib.suppress(Exception):
                closer()

    def __enter__(self) -> FileAccess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Pipe:
    """A socket as paramiko's SFTP client expects its channel: send, recv, close and a name."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name

    def send(self, data: bytes) -> int:
        return self.sock.send(data)

    def recv(self, n: int) -> bytes:
        return self.sock.recv(n)

    def recv_ready(self) -> bool:
        """Whether an answer waits (paramiko asks when more than 100 writes are in flight)."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)

    def close(self) -> None:
        self.sock.close()

    def get_name(self) -> str:
        return self.name


def over_process(argv: list[str], roots: tuple[str, ...], *, env: dict[str, str] | None = None,
                 cwd: str | None = None, pass_fds: tuple[int, ...] = (),
                 preexec_fn: Callable[[], None] | None = None, timeout: float = 10) -> FileAccess:
    """SFTP spoken with a program (OpenSSH's ``sftp-server``) over a socket pair: its stdin
    and stdout are one end, paramiko the other, and it runs in a session of its own (never
    with visa's controlling terminal). The program is killed when the session closes."""
    ours, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen(  # argv built by the provider
            argv, stdin=theirs, stdout=theirs, stderr=subprocess.DEVNULL, env=env, cwd=cwd,
            pass_fds=pass_fds, preexec_fn=preexec_fn, close_fds=True,  # cgroup writes only
            start_new_session=True,
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()

    def stop() -> None:
        proc.kill()
        proc.wait(5)

    ours.settimeout(timeout)
    try:
        sftp = BoundedSFTP(_Pipe(ours, "sftp-server"))  # type: ignore[arg-type]
    except BaseException:
        ours.close()
        stop()
        raise
    return FileAccess(sftp, roots, [ours.close, stop])
