"""The boot scripts that run as root (visa/provisioning/files) against a home the owner controls.

A home can come from shared storage the owner writes from elsewhere: whatever symlinks it
holds, root must not write, create or chown anything outside it on the owner's behalf.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OWNER = "visabootowner"


@pytest.fixture
def owner() -> Iterator[pwd.struct_passwd]:
    if os.geteuid() != 0:
        pytest.skip("needs root (a local account)")
    for program in ("vncpasswd", "runuser", "useradd"):
        if shutil.which(program) is None:
            pytest.skip(f"missing {program}")
    subprocess.run(["userdel", "-r", OWNER], capture_output=True)
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", OWNER], check=True)
    try:
        yield pwd.getpwnam(OWNER)
    finally:
        subprocess.run(["userdel", "-r", OWNER], capture_output=True)


def _setup_desktop(tmp_path: Path, owner: pwd.struct_passwd) -> subprocess.CompletedProcess[str]:
    """The real setup-desktop script, its two /etc/visa files moved into the test's directory."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "instance.env").write_text(f"VISA_OWNER={owner.pw_name}\nVISA_HOME={owner.pw_dir}\n")
    (etc / "desktop.secret").write_text("s3cret-vnc-password")
    (etc / "desktop.secret").chmod(0o600)
    source = (ROOT / "visa/provisioning/files/setup-desktop.sh").read_text()
    assert "/etc/visa/instance.env" in source and "/etc/visa/desktop.secret" in source
    source = source.replace("/etc/visa/instance.env", str(etc / "instance.env"))
    source = source.replace("/etc/visa/desktop.secret", str(etc / "desktop.secret"))
    script = tmp_path / "setup-desktop"
    script.write_text(source)
    return subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=30)


def _as_owner(owner: pwd.struct_passwd, *cmd: str) -> None:
    subprocess.run(["runuser", "-u", owner.pw_name, "--", *cmd], check=True)


def test_setup_desktop_writes_the_password_file_as_the_owner(tmp_path: Path, owner: pwd.struct_passwd) -> None:
    done = _setup_desktop(tmp_path, owner)
    assert done.returncode == 0, done.stderr
    vnc = Path(owner.pw_dir, ".vnc")
    passwd = vnc / "passwd"
    assert vnc.stat().st_uid == owner.pw_uid and vnc.stat().st_mode & 0o777 == 0o700
    assert passwd.stat().st_uid == owner.pw_uid and passwd.stat().st_mode & 0o077 == 0
    assert passwd.read_bytes() and b"s3cret" not in passwd.read_bytes()  # vncpasswd's obfuscated form


def test_a_planted_password_symlink_does_not_make_root_write_elsewhere(
    tmp_path: Path, owner: pwd.struct_passwd
) -> None:
    victim = tmp_path / "victim"  # a file only root may write
    victim.write_text("root's own\n")
    tmp_path.chmod(0o755)
    _as_owner(owner, "mkdir", "-m", "0700", f"{owner.pw_dir}/.vnc")
    _as_owner(owner, "ln", "-s", str(victim), f"{owner.pw_dir}/.vnc/passwd")
    _setup_desktop(tmp_path, owner)
    assert victim.read_text() == "root's own\n"
    assert victim.stat().st_uid == 0


def test_a_planted_directory_symlink_does_not_hand_a_root_directory_to_the_owner(
    tmp_path: Path, owner: pwd.struct_passwd
) -> None:
    target = tmp_path / "rootdir"  # e.g. /etc/sudoers.d
    target.mkdir(mode=0o755)
    tmp_path.chmod(0o755)
    _as_owner(owner, "ln", "-s", str(target), f"{owner.pw_dir}/.vnc")
    _setup_desktop(tmp_path, owner)
    assert target.stat().st_uid == 0 and target.stat().st_mode & 0o777 == 0o755
    assert list(target.iterdir()) == []
