"""visa's channel to a warm machine's helper against a real sshd on loopback: visa's key, the host
key visa derived for the machine, a forced command standing for the helper. What the machine
prints is the attacker's: only exit status 0 with the one word ``ok`` counts, anything else is a
failure, and nothing of it is kept (the channel answers a bool)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import free_port, wait_port
from visa.instances import probe_keys
from visa.instances.helper import HelperTarget, SshHelper, said_ok
from visa.provisioning import host_keys
from visa.settings import Settings

pytestmark = pytest.mark.integration

UID = "0a1b2c3d4e5f"
# What the stand-in helper does, by the word in its mode file.
HELPER = """#!/bin/sh
cat > "$0.received"
case "$(cat "$0.mode")" in
ok) echo ok ;;
script) printf '<script>alert(document.cookie)</script>\\nok\\n' ;;
refuses) echo ok; exit 1 ;;
floods) head -c 1000000 /dev/zero | tr '\\0' 'o' ;;
esac
"""


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[tuple[Settings, Path, int, int]]:
    """sshd whose root key is visa's, forced to run the stand-in helper; its host key is the one
    visa derives for UID; and a second one with a key of its own (an impostor)."""
    if os.geteuid() != 0 or shutil.which("/usr/sbin/sshd") is None:
        pytest.skip("needs root and sshd")
    settings = Settings(data_dir=tmp_path / "data", secret_key="k")
    settings.provisioning.assign_username = "root"
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    helper = tmp_path / "helper"
    helper.write_text(HELPER)
    helper.chmod(0o755)
    procs, ports = [], []
    for name, key in (("visa", host_keys.private_openssh(settings.resolved_secret_key(), UID)), ("impostor", None)):
        d = tmp_path / name
        (d / "keys").mkdir(parents=True)
        if key is None:
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True)
        else:
            (d / "host_key").write_text(key)
            (d / "host_key").chmod(0o600)
        (d / "keys" / "root").write_text(f'restrict,command="{helper}" {probe_keys.public_key(settings)}\n')
        port = free_port()
        (d / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {d / 'keys'}/%u\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nAllowUsers root\n")
        procs.append(subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(port, timeout=10)
        ports.append(port)
    try:
        yield settings, helper, ports[0], ports[1]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(5)


def test_only_ok_from_the_machine_with_visas_host_key_counts(machine) -> None:
    settings, helper, port, impostor = machine
    channel = SshHelper(settings, timeout=10)
    document = {"verb": "assign", "username": "alice"}
    answers = {}
    for mode in ("ok", "script", "refuses", "floods"):
        helper.with_name("helper.mode").write_text(mode)
        answers[mode] = channel(HelperTarget(UID, "127.0.0.1", port), document)
    assert answers == {"ok": True, "script": False, "refuses": False, "floods": False}
    assert json.loads(helper.with_name("helper.received").read_text()) == document  # on stdin, as sent
    helper.with_name("helper.mode").write_text("ok")
    assert channel(HelperTarget(UID, "127.0.0.1", impostor), document) is False  # another host key
    assert channel(HelperTarget("another-uid", "127.0.0.1", port), document) is False  # another machine's


def test_said_ok_is_the_one_word_and_a_zero_status() -> None:
    assert said_ok(0, b"ok\n")
    assert not said_ok(1, b"ok\n") and not said_ok(0, b"ok <b>") and not said_ok(0, b"") and not said_ok(0, b"OK")
