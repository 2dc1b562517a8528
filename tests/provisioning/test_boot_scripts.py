"""The boot scripts that run as root (visa/provisioning/files) against a home the owner controls.

A home can come from shared storage the owner writes from elsewhere: whatever symlinks it
holds, root must not write, create or chown anything outside it on the owner's behalf.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
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


def test_a_failing_step_says_so_in_the_words_visa_reads() -> None:
    from visa.provisioning import report

    step = str(ROOT / "visa/provisioning/files/step.sh")
    ok = subprocess.run(["sh", step, "desktop-start", "true"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and report.failures(ok.stderr) == []
    failed = subprocess.run(["sh", step, "desktop-setup", "sh", "-c", "exit 3"], capture_output=True, text=True,
                            timeout=30)
    assert failed.returncode == 3  # cloud-init still sees the failure
    (found,) = report.failures(failed.stderr)
    assert (found.step, found.reason, found.fatal) == ("desktop-setup", "sh exited with status 3", True)


def test_data_that_did_not_mount_are_named_and_the_boot_carries_on(tmp_path: Path) -> None:
    from visa.provisioning import report

    # `mount` itself is replaced: this test must not mount the test machine's own fstab
    # entries; the real mounts are exercised on a real VM (tests/clouds/test_real_vm.py).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mount").write_text("#!/bin/sh\necho 'mount.nfs: access denied by server' >&2\nexit 32\n")
    (bin_dir / "mount").chmod(0o755)
    missing = tmp_path / "data" / "ev280"
    missing.mkdir(parents=True)
    mounts = tmp_path / "mounts"
    mounts.write_text(f"{missing}\n")
    source = (ROOT / "visa/provisioning/files/mount-data.sh").read_text()
    assert "/etc/visa/mounts" in source
    script = tmp_path / "mount-data"
    script.write_text(source.replace("/etc/visa/mounts", str(mounts)))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr  # the desktop still starts after it
    (found,) = report.failures(done.stderr)
    assert found.step == "data-mount" and not found.fatal and str(missing) in found.reason


def _home_setup(tmp_path: Path, owner: pwd.struct_passwd, *, share: bool, wrap: list[str] = ()) -> subprocess.CompletedProcess[str]:  # type: ignore[assignment]
    """The real home-setup script, its instance.env and /etc/skel moved into the test's directory,
    and `mount` replaced (it must not mount the test machine's own fstab entries)."""
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "instance.env").write_text(
        f"VISA_OWNER={owner.pw_name}\nVISA_HOME={owner.pw_dir}\nVISA_HOME_SHARE={1 if share else 0}\n"
    )
    # The owner copies skel: it must be where they can read it (pytest's directories are root's).
    skel = Path(tempfile.mkdtemp(prefix="visa-skel-"))
    skel.chmod(0o755)
    (skel / ".bashrc").write_text("# the image's default\n")
    (skel / ".config").mkdir(exist_ok=True)
    (skel / ".config" / "default.conf").write_text("default\n")
    tmp_path.chmod(0o755)
    source = (ROOT / "visa/provisioning/files/home-setup.sh").read_text()
    assert "/etc/visa/instance.env" in source and "/etc/skel/." in source
    source = source.replace("/etc/visa/instance.env", str(etc / "instance.env")).replace("/etc/skel/.", f"{skel}/.")
    script = tmp_path / "home-setup"
    script.write_text(source)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "mount").write_text("#!/bin/sh\nexit 32\n")
    (bin_dir / "mount").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    try:
        return subprocess.run([*wrap, "sh", str(script)], capture_output=True, text=True, timeout=60, env=env)
    finally:
        shutil.rmtree(skel)


def _empty(home: str) -> None:
    for child in Path(home).iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def test_an_empty_home_gets_skel_as_the_owner(tmp_path: Path, owner: pwd.struct_passwd) -> None:
    _empty(owner.pw_dir)
    done = _home_setup(tmp_path, owner, share=False)
    assert done.returncode == 0, done.stderr
    bashrc = Path(owner.pw_dir, ".bashrc")
    assert bashrc.read_text() == "# the image's default\n" and bashrc.stat().st_uid == owner.pw_uid
    assert Path(owner.pw_dir, ".config", "default.conf").stat().st_uid == owner.pw_uid


def test_an_existing_homes_content_is_never_overwritten(tmp_path: Path, owner: pwd.struct_passwd) -> None:
    _empty(owner.pw_dir)
    _as_owner(owner, "sh", "-c", f"echo 'my own settings' > {owner.pw_dir}/.bashrc")
    done = _home_setup(tmp_path, owner, share=False)
    assert done.returncode == 0, done.stderr
    assert Path(owner.pw_dir, ".bashrc").read_text() == "my own settings\n"
    assert not Path(owner.pw_dir, ".config").exists()  # nothing of skel added either


def test_a_home_share_that_did_not_mount_fails_the_boot(tmp_path: Path, owner: pwd.struct_passwd) -> None:
    from visa.provisioning import report

    _empty(owner.pw_dir)
    done = _home_setup(tmp_path, owner, share=True)
    assert done.returncode == 1
    (found,) = report.failures(done.stderr)
    assert found.step == "home-mount" and found.fatal and owner.pw_dir in found.reason
    assert list(Path(owner.pw_dir).iterdir()) == []  # nothing written on the machine's own disk


def test_a_mounted_home_share_is_used_and_kept(tmp_path: Path, owner: pwd.struct_passwd) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("missing unshare")
    _empty(owner.pw_dir)
    _as_owner(owner, "sh", "-c", f"echo 'from the last machine' > {owner.pw_dir}/notes.txt")
    # The share, as a bind mount in a mount namespace of the test's own.
    wrap = ["unshare", "-m", "sh", "-c", '/usr/bin/mount --bind "$0" "$0" && exec "$@"', owner.pw_dir]
    done = _home_setup(tmp_path, owner, share=True, wrap=wrap)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in Path(owner.pw_dir).iterdir()) == ["notes.txt"]
