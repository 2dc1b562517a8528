"""Each instance's SSH host key, made by visa: the activity probe knows it before the first login.

The key is derived from visa's secret key and the instance's uid (HKDF-SHA256 to an Ed25519
seed), so nothing is stored: the private half goes only into the instance's user-data
(cloud-init ``ssh_keys``), and the probe recomputes the public half to pin it. A machine
that answers with any other key is refused, even on the first connection.
"""

from __future__ import annotations

import base64

import paramiko
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_SALT = b"visa ssh host key v1"


def private_key(secret_key: str, instance_uid: str) -> Ed25519PrivateKey:
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=instance_uid.encode()).derive(
        secret_key.encode()
    )
    return Ed25519PrivateKey.from_private_bytes(seed)


def private_openssh(secret_key: str, instance_uid: str) -> str:
    """The private key as sshd reads it (OpenSSH format, unencrypted)."""
    return (
        private_key(secret_key, instance_uid)
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        .decode()
    )


def public_line(secret_key: str, instance_uid: str) -> str:
    """``ssh-ed25519 AAAA...``: the public half as authorized_keys and cloud-init write it."""
    return (
        private_key(secret_key, instance_uid)
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def pinned(secret_key: str, instance_uid: str) -> paramiko.PKey:
    """The host key the probe accepts from this instance, and no other."""
    _, blob = public_line(secret_key, instance_uid).split()
    return paramiko.Ed25519Key(data=base64.b64decode(blob))
