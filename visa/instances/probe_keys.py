"""The SSH key visa's activity probe logs in with: generated once into the data directory.

The public half goes into every machine's cloud-init (the probe account's only key, forced
to run the probe command); the private half stays with visa. Several visa processes may
start at once: the key is written to a temporary file and linked into place, so they all
end up with the same key whatever the race.

A site that sets ``provisioning.probe_public_key`` itself puts the matching private key
(OpenSSH format) at ``<data_dir>/probe_key``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from visa.settings import Settings

KEY_FILE = "probe_key"
COMMENT = "visa-activity-probe"


def key_path(settings: Settings) -> Path:
    return (settings.data_dir / KEY_FILE).resolve()


def ensure_key(settings: Settings) -> Path:
    """The private key file, made on first use (mode 0600)."""
    path = key_path(settings)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    fd, tmp = tempfile.mkstemp(prefix=".probe_key.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
        os.close(fd)
        with contextlib.suppress(FileExistsError):  # another process won the race: its key is the key
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
    return path


def private_key(settings: Settings) -> paramiko.PKey:
    return paramiko.Ed25519Key.from_private_key_file(str(ensure_key(settings)))


def public_key(settings: Settings) -> str:
    """One OpenSSH line, as the provisioning renderer puts it in authorized_keys."""
    key = private_key(settings)
    return f"{key.get_name()} {key.get_base64()} {COMMENT}"
