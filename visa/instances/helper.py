"""visa's side of a warm machine's assignment helper (``provisioning/files/assign.py``).

One SSH connection as the machine's assignment account, with visa's key, to the host key visa
gave the machine (derived from its uid, pinned from the first connection, as the activity probe
does): one JSON document on stdin, the exit status and the word ``ok`` back. Nothing else the
machine prints is kept, logged or shown: at most ``MAX_OUTPUT`` bytes are read and compared.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paramiko

from visa.instances import probe_keys
from visa.instances.activity import _RefuseHostKey
from visa.provisioning import host_keys
from visa.provisioning.warm import ASSIGN_COMMAND, encode
from visa.settings import Settings

MAX_OUTPUT = 4096
TIMEOUT = 20.0
# An assignment mounts the data and starts the desktop: it may take this long on a slow machine.
ASSIGN_TIMEOUT = 120.0
CHECK = {"verb": "check"}


@dataclass(frozen=True)
class HelperTarget:
    uid: str  # the machine's uid: its pinned host key
    host: str
    port: int = 22


# (machine, document) -> whether it answered ok. The scheduler and the executor are given one.
Channel = Callable[[HelperTarget, dict[str, Any]], bool]


def said_ok(status: int, output: bytes) -> bool:
    """Exit status 0 and the one word ``ok``: anything else is a failure, whatever it says."""
    return status == 0 and output.strip() == b"ok"


class SshHelper:
    """The helper over SSH: ``SshHelper(settings)(target, document) -> bool``."""

    def __init__(self, settings: Settings, *, timeout: float = TIMEOUT) -> None:
        self.username = settings.provisioning.assign_username
        self.key = probe_keys.private_key(settings)
        self.secret_key = settings.resolved_secret_key()
        self.timeout = timeout

    def __call__(self, target: HelperTarget, document: dict[str, Any]) -> bool:
        client = paramiko.SSHClient()
        name = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
        client.get_host_keys().add(name, "ssh-ed25519", host_keys.pinned(self.secret_key, target.uid))
        client.set_missing_host_key_policy(_RefuseHostKey())
        wait = ASSIGN_TIMEOUT if document.get("verb") == "assign" else self.timeout
        try:
            client.connect(
                target.host, target.port, username=self.username, pkey=self.key, timeout=self.timeout,
                banner_timeout=self.timeout, auth_timeout=self.timeout, allow_agent=False, look_for_keys=False,
            )
            channel = client.get_transport().open_session(timeout=self.timeout)  # type: ignore[union-attr]
            channel.exec_command(ASSIGN_COMMAND)
            channel.sendall(encode(document))
            channel.shutdown_write()
            output = _bounded(channel, wait)
            if output is None:
                return False
            return said_ok(channel.recv_exit_status(), output)
        except (OSError, EOFError, paramiko.SSHException):
            return False
        finally:
            client.close()


def _bounded(channel: paramiko.Channel, timeout: float) -> bytes | None:
    """What the helper printed, or None past ``MAX_OUTPUT`` bytes or ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        channel.settimeout(left)
        try:
            chunk = channel.recv(MAX_OUTPUT)
        except TimeoutError:
            return None
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > MAX_OUTPUT:
            return None
