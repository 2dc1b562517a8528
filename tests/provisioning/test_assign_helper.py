"""The warm machine's assignment helper (visa/provisioning/files/assign.py), the attacker's view first.

The helper runs as root on a machine that is about to be a scientist's, from what visa's key
sends. Whoever got hold of that channel, or of a value visa passes on (a username, a home, a
mount), must not make it run anything else, write outside its files, mount what visa did not
grant, or give the machine a second owner. Its real files and checks run here against a
directory standing for the machine's root (the files the warm user-data writes there); the
commands it would run as root are recorded instead of run (they make accounts and mounts).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.provisioning.cloudinit import cloud_config_part, validate
from visa.catalogue.models import Protocol
from visa.errors import InvalidInput
from visa.provisioning.spec import BootSpec, ExperimentData, Owner, Port
from visa.provisioning.warm import WarmBoot, assignment, display_document, encode, render_warm_user_data
from visa.settings import ProvisioningSettings

ROOT = Path(__file__).resolve().parents[2]
HELPER = ROOT / "visa/provisioning/files/assign.py"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGn6hKQ3ch5oN1ZfWkTBFZ9Ms6L7Y2fWlHS9vYfVZzLm visa"
SITE = ProvisioningSettings(raw_mount_template="10.213.0.1:/facility/visitor/{proposal}/{beamline}",
                            processed_mount_template="10.213.0.1:/facility/processed/{proposal}/{beamline}")


def _helper() -> ModuleType:
    spec = importlib.util.spec_from_file_location("visa_assign_helper", HELPER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


helper = _helper()


def _spec(username: str = "alice", **owner: Any) -> BootSpec:
    return BootSpec(
        id=1, uid="0a1b2c3d4e5f", secret="Zq8sW3cretVnc-token_4242",
        owner=Owner(username=username, full_name="Alice", uid_number=owner.get("uid", 21001),
                    gid_number=owner.get("gid", 21001), extra_gids=owner.get("groups", (3000,))),
        image_name="desktop", screen_width=1280, screen_height=800, keyboard_layout="fr-fr",
        ports=(Port(Protocol.VNC, 5901), Port(Protocol.JUPYTER, 8888)),
        experiments=(ExperimentData(1, "ev280", "id21"),),
    )


class Machine:
    """A directory laid out as the warm machine's root after its boot, and the commands run as root."""

    def __init__(self, root: Path, ports: tuple[Port, ...] = (Port(Protocol.VNC, 5901), Port(Protocol.JUPYTER, 8888))
                 ) -> None:
        self.root = root
        self.commands: list[list[str]] = []
        self.stdin: dict[str, bytes] = {}  # what a command read on stdin, by its program
        user_data = render_warm_user_data(
            WarmBoot(uid="0a1b2c3d4e5f", secret="Zq8sW3cretVnc-token_4242", image_name="desktop", ports=ports),
            site=SITE, probe_public_key=KEY, host_key=("PRIVATE", "ssh-ed25519 AAAA"),
        )
        self.config = yaml.safe_load(cloud_config_part(user_data))
        for entry in self.config["write_files"]:
            path = root / entry["path"].lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(entry["content"])
        (root / "etc/fstab").write_text("# the image's own\n")
        (root / "var/lib/cloud/instance").mkdir(parents=True)
        (root / "var/lib/cloud/instance/boot-finished").write_text("")

    def run(self, argv: Sequence[str], stdin: bytes | None = None) -> int:
        self.commands.append(list(argv))
        if stdin is not None:
            self.stdin[argv[0]] = stdin
        return 1 if argv[:2] == ["getent", "group"] else 0

    def send(self, document: Any) -> tuple[int, str]:
        data = document if isinstance(document, bytes) else json.dumps(document).encode()
        return helper.main(data, self.root, self.run)

    def files(self) -> dict[str, str]:
        return {str(p.relative_to(self.root)): p.read_text() for p in sorted(self.root.rglob("*")) if p.is_file()}


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path)


def _document() -> dict[str, Any]:
    return assignment(_spec(), site=SITE)


def test_the_warm_user_data_holds_nothing_of_anyone_and_only_visas_key_gets_in(machine: Machine) -> None:
    text = json.dumps(machine.config)
    assert "alice" not in text and "21001" not in text and "ev280" not in text
    users = {u["name"]: u for u in machine.config["users"]}
    assert set(users) == {"visa", "visa-assign"}
    assert users["visa-assign"]["ssh_authorized_keys"] == [
        f'restrict,command="sudo -n /usr/local/libexec/visa/assign" {KEY}']
    assert users["visa-assign"]["sudo"] == "ALL=(root) NOPASSWD: /usr/local/libexec/visa/assign"
    assert "sudo" not in users["visa"]  # the probe's rule names the owner: it comes with the owner
    # The owner's services are templates, run as the name the assignment gives them.
    units = {f["path"]: f["content"] for f in machine.config["write_files"] if f["path"].startswith("/etc/systemd")}
    assert set(units) == {"/etc/systemd/system/visa-desktop@.service", "/etc/systemd/system/visa-jupyter@.service"}
    assert all("User=%i\n" in unit for unit in units.values())


def test_the_warm_user_data_is_valid_cloud_config(tmp_path: Path) -> None:
    validate(render_warm_user_data(WarmBoot(uid="0a1b2c3d4e5f", secret="Zq8sW3cretVnc-token_4242",
                                            image_name="desktop", ports=(Port(Protocol.VNC, 5901),)),
                                   site=SITE, probe_public_key=KEY, host_key=("PRIVATE", "ssh-ed25519 AAAA")),
             tmp_path)


def test_a_document_visa_renders_gives_the_machine_its_owner(machine: Machine) -> None:
    assert machine.send({"verb": "check"}) == (0, "ok")
    assert machine.send(_document()) == (0, "ok")
    assert ["groupadd", "-o", "-g", "21001", "alice"] in machine.commands
    useradd = next(c for c in machine.commands if c[0] == "useradd")
    assert useradd[-1] == "alice" and useradd[useradd.index("-u"):useradd.index("-u") + 2] == ["-u", "21001"]
    assert "-G" in useradd and useradd[useradd.index("-G") + 1] == "3000"
    files = machine.files()
    env = files["etc/visa/instance.env"]
    assert "VISA_OWNER=alice\n" in env and "VISA_XKB_LAYOUT=fr\n" in env and "VISA_GEOMETRY=1280x800\n" in env
    assert files["etc/fstab"].splitlines()[1:] == [
        "10.213.0.1:/facility/visitor/ev280/id21 /data/visitor/ev280/id21 nfs "
        "ro,nfsvers=4.2,hard,_netdev,nofail,x-systemd.automount 0 0",
        "10.213.0.1:/facility/processed/ev280/id21 /data/processed/ev280/id21 nfs "
        "rw,nfsvers=4.2,hard,_netdev,nofail,x-systemd.automount 0 0",
    ]
    assert files["etc/sudoers.d/visa-probe"] == "visa ALL=(alice) NOPASSWD: /usr/local/libexec/visa/x-idle\n"
    assert files["etc/visa/keys/alice"].startswith('restrict,command="/usr/lib/openssh/sftp-server" ')
    # The boot's templates, run as alice: the helper writes no unit of its own.
    assert [f for f in files if f.startswith("etc/systemd")] == [
        "etc/systemd/system/visa-desktop@.service", "etc/systemd/system/visa-jupyter@.service"]
    assert json.loads(files["etc/visa/jupyter_server_config.json"])["IdentityProvider"]["token"] == \
        "Zq8sW3cretVnc-token_4242"
    # Started with no reload of systemd's units (seconds on a small machine): the boot loaded the templates.
    assert machine.commands[-1][2:] == ["systemctl", "enable", "--now", "--no-reload", "visa-desktop@alice.service",
                                        "visa-jupyter@alice.service"]
    assert not [c for c in machine.commands if "daemon-reload" in c]


def test_a_second_assignment_is_refused_whatever_it_says(machine: Machine) -> None:
    assert machine.send(_document())[0] == 0
    before, ran = machine.files(), len(machine.commands)
    other = assignment(_spec("mallory", uid=22002, gid=22002, groups=()), site=SITE)
    for document in (other, _document()):
        status, line = machine.send(document)
        assert status == 1 and line.startswith("refused"), line
    assert machine.send({"verb": "check"})[0] == 1  # no longer a warm machine
    assert machine.files() == before and len(machine.commands) == ran


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        keys = path.split(".")
        target: Any = document
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        last = keys[-1]
        if value is KeyError:
            del target[last]
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return change


INJECTED: dict[str, Callable[[dict[str, Any]], None]] = {
    "root": _set("username", "root"),
    "the probe account": _set("username", "visa"),
    "the assign account": _set("username", "visa-assign"),
    "shell in a username": _set("username", "alice;reboot"),
    "option as a username": _set("username", "-oroot"),
    "space in a username": _set("username", "alice bob"),
    "newline in a username": _set("username", "alice\nroot::0:0::/:/bin/sh"),
    "uid 0": _set("uid", 0),
    "system uid": _set("uid", 999),
    "uid as text": _set("uid", "21001"),
    "uid true": _set("uid", True),
    "negative gid": _set("gid", -1),
    "gid as a float": _set("gid", 21001.0),
    "group as text": _set("groups", ["3000,0"]),
    "group root": _set("groups", [0]),
    "home in /etc": _set("home", "/etc"),
    "home climbing out": _set("home", "/home/../etc/ssh"),
    "home root": _set("home", "/home"),
    "home relative": _set("home", "home/alice"),
    "home with a space": _set("home", "/home/alice /etc"),
    "mount over /etc": _set("mounts.0.target", "/etc"),
    "mount climbing out": _set("mounts.0.target", "/data/visitor/ev280/../../../etc"),
    "mount beside the roots": _set("mounts.0.target", "/data/elsewhere/ev280/id21"),
    "mount too deep": _set("mounts.0.target", "/data/visitor/ev280/id21/deeper"),
    "raw data writable": _set("mounts.0.options", "rw,nfsvers=4.2"),
    "both ro and rw": _set("mounts.0.options", "ro,rw"),
    "suid mount": _set("mounts.1.options", "rw,suid"),
    "device mount": _set("mounts.1.options", "rw,dev"),
    "space in options": _set("mounts.1.options", "rw 0 0\n/dev/sda1 /mnt ext4 rw"),
    "newline in a source": _set("mounts.0.source", "10.213.0.1:/x\n/dev/sda1"),
    "space in a source": _set("mounts.0.source", "10.213.0.1:/x /etc"),
    "source climbing out": _set("mounts.0.source", "10.213.0.1:/facility/../etc"),
    "a local disk": _set("mounts.0.source", "/dev/sda1"),
    "another type": _set("mounts.0.type", "ext4"),
    "bind without bind": _set("mounts.0.type", "none"),
    "two mounts on one target": _set("mounts.1.target", "/data/visitor/ev280/id21"),
    "an extra field in a mount": _set("mounts.0.owner", "root"),
    "an extra field": _set("shell", "/bin/sh"),
    "a missing field": _set("home", KeyError),
    "geometry with a command": _set("geometry", "1280x800;reboot"),
    "layout with an option": _set("xkb_layout", "us -option"),
    "variant with a path": _set("xkb_variant", "../../x"),
    "another verb": _set("verb", "display"),
}


@pytest.mark.parametrize("case", INJECTED)
def test_injected_arguments_are_refused_before_anything_is_done(machine: Machine, case: str) -> None:
    document = copy.deepcopy(_document())
    INJECTED[case](document)
    before = machine.files()
    status, line = machine.send(document)
    assert status == 1 and line.startswith("refused"), (case, line)
    assert machine.commands == [] and machine.files() == before  # nothing run, nothing written, no marker


@pytest.mark.parametrize("data", [b"", b"not json", b"\xff\xfe", b"[]", b'{"verb": "check", "x": 1}',
                                  encode({"verb": "assign"}), b" " * (65 * 1024) + b"{}"])
def test_what_is_not_an_assignment_is_refused(machine: Machine, data: bytes) -> None:
    before = machine.files()
    status, line = machine.send(data)
    assert status == 1 and line.startswith("refused"), line
    assert machine.commands == [] and machine.files() == before


def test_the_helper_as_the_machine_runs_it_answers_one_line_and_a_status() -> None:
    """The real executable (``python3 -I``, as sudo starts it): on a host that is no warm machine,
    a check is refused with status 1 and one line."""
    done = subprocess.run([sys.executable, "-I", str(HELPER)], input=b'{"verb": "check"}', capture_output=True,
                          timeout=30)
    assert done.returncode == 1 and done.stdout.decode().startswith("refused"), done
    assert done.stdout.count(b"\n") == 1


def test_visa_refuses_to_send_what_the_helper_would_refuse() -> None:
    for spec in (_spec("visa-assign"), _spec("alice;reboot")):
        with pytest.raises(InvalidInput):
            assignment(spec, site=SITE)


def test_display_settings_reach_a_machine_only_once_it_has_its_owner(machine: Machine) -> None:
    change = display_document(1920, 1080, "fr-ch")
    status, line = machine.send(change)
    assert status == 1 and line.startswith("refused") and machine.commands == []  # no owner yet
    machine.send(_document())
    ran = len(machine.commands)
    assert machine.send(change) == (0, "ok")
    env = machine.files()["etc/visa/instance.env"]
    assert "VISA_GEOMETRY=1920x1080\n" in env and "VISA_XKB_LAYOUT=ch\n" in env and "VISA_XKB_VARIANT=fr\n" in env
    assert env.count("VISA_GEOMETRY=") == 1 and "VISA_OWNER=alice\n" in env
    # The layout on the running desktop now, as the owner.
    assert machine.commands[ran:] == [["runuser", "-u", "alice", "--", "env", "DISPLAY=:1",
                                       "XAUTHORITY=/home/alice/.Xauthority", "setxkbmap", "-layout", "ch",
                                       "-variant", "fr"]]


@pytest.mark.parametrize("change", [
    {"verb": "display", "geometry": "1920x1080;reboot", "xkb_layout": "fr", "xkb_variant": ""},
    {"verb": "display", "geometry": "1920x1080", "xkb_layout": "fr -option ctrl:nocaps", "xkb_variant": ""},
    {"verb": "display", "geometry": "1920x1080", "xkb_layout": "fr", "xkb_variant": "\nVISA_OWNER=root"},
    {"verb": "display", "geometry": "1920x1080", "xkb_layout": "fr", "xkb_variant": "", "username": "root"},
    {"verb": "display", "geometry": "1920x1080", "xkb_layout": ""},
])
def test_injected_display_settings_are_refused(machine: Machine, change: dict[str, Any]) -> None:
    machine.send(_document())
    before, ran = machine.files(), len(machine.commands)
    status, line = machine.send(change)
    assert status == 1 and line.startswith("refused"), line
    assert machine.files() == before and len(machine.commands) == ran


def test_a_machine_that_booted_with_its_owner_takes_display_settings_and_no_assignment(tmp_path: Path) -> None:
    from visa.provisioning.userdata import render_user_data

    user_data = render_user_data(_spec(), site=SITE, probe_public_key=KEY)
    config = yaml.safe_load(cloud_config_part(user_data))
    users = {u["name"]: u for u in config["users"]}
    assert users["visa-assign"]["ssh_authorized_keys"] == [
        f'restrict,command="sudo -n /usr/local/libexec/visa/assign" {KEY}']
    machine = Machine(tmp_path)  # a warm machine's files, then the ones this boot writes over them
    for entry in config["write_files"]:
        if not entry.get("defer"):
            path = tmp_path / entry["path"].lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(entry["content"])
    status, line = machine.send(_document())
    assert status == 1 and line.startswith("refused") and machine.commands == []
    assert machine.send(display_document(1280, 800, "de-de")) == (0, "ok")
    assert "VISA_XKB_LAYOUT=de\n" in machine.files()["etc/visa/instance.env"]


def test_an_rdp_machine_gets_the_owners_password_on_chpasswds_stdin(tmp_path: Path) -> None:
    """xrdp logs the owner in with the instance secret (what visa's RDP bridge sends): set by
    chpasswd from stdin, after the account is made, on no command line."""
    machine = Machine(tmp_path, ports=(Port(Protocol.RDP, 3389),))
    assert "VISA_RDP_PORT=3389\n" in machine.files()["etc/visa/warm.env"]
    assert machine.send(_document()) == (0, "ok")
    assert ["chpasswd"] in machine.commands
    assert machine.commands.index(["chpasswd"]) > machine.commands.index(["passwd", "-l", "alice"])
    assert machine.stdin["chpasswd"] == b"alice:Zq8sW3cretVnc-token_4242\n"
    assert not [c for c in machine.commands if "Zq8sW3cretVnc-token_4242" in " ".join(c)]
    assert not [f for f in machine.files() if f.endswith(".service") and "desktop" in f]  # no VNC desktop


def test_a_vnc_machine_keeps_its_owners_password_locked(machine: Machine) -> None:
    assert machine.send(_document()) == (0, "ok")
    assert ["passwd", "-l", "alice"] in machine.commands and ["chpasswd"] not in machine.commands
    assert machine.stdin == {}


def test_an_rdp_machine_with_a_secret_visa_never_writes_is_refused(tmp_path: Path) -> None:
    machine = Machine(tmp_path, ports=(Port(Protocol.RDP, 3389),))
    (tmp_path / "etc/visa/desktop.secret").write_text("alice:x\nroot:owned\n")
    status, line = machine.send(_document())
    assert status == 1 and line.startswith("refused") and ["chpasswd"] not in machine.commands


def test_a_warm_rdp_machine_refuses_passwords_over_ssh_before_its_owner_has_one(tmp_path: Path) -> None:
    rdp = Machine(tmp_path / "rdp", ports=(Port(Protocol.RDP, 3389),))
    conf = rdp.files()["etc/ssh/sshd_config.d/00-visa-no-passwords.conf"]
    assert conf == "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
    assert rdp.config["ssh_pwauth"] is False
    vnc = Machine(tmp_path / "vnc")
    assert "etc/ssh/sshd_config.d/00-visa-no-passwords.conf" not in vnc.files()
