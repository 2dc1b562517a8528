"""Files in and out of a machine with sshd: a real sshd on loopback, a real unix account, the
owner's authorized_keys line exactly as the user-data renders it (visa's key, forced to run
OpenSSH's sftp-server), the host key visa gave the instance. The attacker's tests come first:
the owner's account controls its file system."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from tests.clouds.doubles import InMemoryCloud
from tests.factories import make_cloud, make_flavour, make_image, make_plan, make_user
from tests.processes import free_port, wait_port
from visa.audit.models import AuditEvent
from visa.clock import FrozenClock
from visa.db import Database
from visa.instances import probe_keys
from visa.instances.models import Instance, InstanceHome, InstanceMember, InstanceState, MemberRole
from visa.instances.spec import boot_spec
from visa.provisioning import host_keys
from visa.provisioning.userdata import render_user_data

pytestmark = pytest.mark.integration

OWNER = "visafilesowner"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
HOME = Path(f"/home/{OWNER}")


def _need() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (a local account, sshd)")
    for prog in ("/usr/sbin/sshd", SFTP_SERVER, "useradd"):
        if not (Path(prog).exists() or shutil.which(prog)):
            pytest.skip(f"missing {prog}")


def as_owner(*argv: str) -> None:
    subprocess.run(["setpriv", f"--reuid={OWNER}", f"--regid={OWNER}", "--clear-groups", "--", *argv], check=True)


@pytest.fixture
def account() -> Iterator[str]:
    _need()
    subprocess.run(["userdel", "-r", OWNER], capture_output=True)
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", OWNER], check=True)
    subprocess.run(["usermod", "-p", "*", OWNER], check=True)  # no password, not locked (sshd refuses "!")
    try:
        yield OWNER
    finally:
        subprocess.run(["pkill", "-KILL", "-u", OWNER], capture_output=True)  # the test account's processes only
        subprocess.run(["userdel", "-r", OWNER], capture_output=True)


@pytest.fixture
def world(app, db: Database, clock: FrozenClock, account: str) -> dict[str, Any]:
    """A running instance of the owner's (at 127.0.0.1), a USER and a GUEST member."""
    svc = app.extensions["visa"]
    # The cloud's provider reaches machines only over SSH (as OpenStack's): open_sftp is None.
    svc.set_provider("vm", InMemoryCloud(name="vm"))
    uid = secrets.token_hex(6)
    with db.unit_of_work() as s:
        cloud = make_cloud(s, clock, "vm", kind="local")
        plan = make_plan(s, make_image(s, "desktop"), make_flavour(s, "small"))
        owner = make_user(s, clock, OWNER, password="ownerpassword")
        user = make_user(s, clock, "colleague", password="colleaguepassword")
        guest = make_user(s, clock, "viewer", password="viewerpassword")
        now = clock.now()
        inst = Instance(uid=uid, name="files", owner_id=owner.id, plan_id=plan.id, cloud_id=cloud.id,
                        state=InstanceState.ACTIVE, secret="s" * 20, provider_state={}, address="127.0.0.1",
                        created_at=now, state_changed_at=now, terminates_at=now.replace(year=now.year + 1),
                        home=InstanceHome.OWN)
        inst.members.append(InstanceMember(user_id=owner.id, role=MemberRole.OWNER, created_at=now))
        inst.members.append(InstanceMember(user_id=user.id, role=MemberRole.USER, created_at=now))
        inst.members.append(InstanceMember(user_id=guest.id, role=MemberRole.GUEST, created_at=now))
        s.add(inst)
        s.flush()
        # The owner's authorized_keys line, as the machine's user-data writes it.
        text = render_user_data(boot_spec(inst, now=now), site=svc.settings.provisioning,
                                probe_public_key=probe_keys.public_key(svc.settings),
                                host_key=(host_keys.private_openssh(svc.settings.resolved_secret_key(), uid),
                                          host_keys.public_line(svc.settings.resolved_secret_key(), uid)))
    config = yaml.safe_load(text.split("\n", 1)[1] if text.startswith("#cloud-config") else text)
    (line,) = next(u for u in config["users"] if isinstance(u, dict) and u["name"] == OWNER)["ssh_authorized_keys"]
    assert line.startswith(f'restrict,command="{SFTP_SERVER}" ')
    return {"uid": uid, "key_line": line, "settings": svc.settings}


@pytest.fixture
def sshd(tmp_path: Path, world: dict[str, Any]) -> Iterator[Callable[..., int]]:
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    made: list[Path] = []

    def start(host_key: str | None = None, key_line: str | None = None) -> int:
        d = tmp_path / f"sshd{len(procs)}"
        d.mkdir()
        # sshd reads authorized_keys as the account: a directory it may traverse (tmp_path is 0700).
        keys = Path(tempfile.mkdtemp(prefix="visa-files-keys-"))
        keys.chmod(0o755)
        made.append(keys)
        secret = world["settings"].resolved_secret_key()
        (d / "host_key").write_text(host_key or host_keys.private_openssh(secret, world["uid"]))
        (d / "host_key").chmod(0o600)
        (keys / OWNER).write_text((key_line or world["key_line"]) + "\n")
        (keys / OWNER).chmod(0o644)
        port = free_port()
        (d / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {keys}/%u\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin no\n"
            f"AllowUsers {OWNER}\n"
        )
        proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                                stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "wb"))  # noqa: SIM115
        procs.append(proc)
        wait_port(port, proc, timeout=10)
        return port

    try:
        yield start
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(5)
        for keys in made:
            shutil.rmtree(keys, ignore_errors=True)


@pytest.fixture
def machine(db: Database, world: dict[str, Any], sshd: Callable[..., int]) -> dict[str, Any]:
    port = sshd()
    with db.unit_of_work() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == world["uid"]))
        inst.provider_state = {"ports": {"ssh": port}}
    return world


def login(api_client, name: str, password: str):
    c = api_client()
    assert c.login(name, password).status_code == 200
    return c


@pytest.fixture
def owner(api_client, machine):
    return login(api_client, OWNER, "ownerpassword")


def files_url(uid: str, what: str = "", **query: str) -> str:
    from urllib.parse import urlencode

    return f"/api/instances/{uid}/files{what}" + (f"?{urlencode(query)}" if query else "")


def audit(db: Database) -> list[AuditEvent]:
    with db.sessionmaker() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action.like("instance.file.%")).order_by(AuditEvent.id)))


# ---------------------------------------------------------------------- the attacker's tests


def test_a_link_out_of_the_home_is_refused_for_download_listing_and_upload(owner, machine, db) -> None:
    uid = machine["uid"]
    as_owner("ln", "-s", "/etc/passwd", str(HOME / "passwd"))
    as_owner("ln", "-s", "/etc", str(HOME / "etc"))
    as_owner("ln", "-s", "/root/nothing-here", str(HOME / "dangling"))
    r = owner.get(files_url(uid, "/content", path=f"{HOME}/passwd"))
    assert r.status_code == 400 and "leads outside" in r.get_json()["message"], r.get_json()
    r = owner.get(files_url(uid, path=f"{HOME}/etc"))
    assert r.status_code == 400 and "leads outside" in r.get_json()["message"]
    r = owner.get(files_url(uid, "/content", path=f"{HOME}/etc/hostname"))
    assert r.status_code == 400 and "leads outside" in r.get_json()["message"]
    # Uploads never write through a link, dangling or not, and never through a linked folder.
    before = Path("/etc/passwd").read_bytes()
    for target in ("passwd", "dangling", "etc/visa-planted"):
        r = owner.put(files_url(uid, "/content", path=f"{HOME}/{target}", overwrite="true"), data=b"owned")
        assert r.status_code == 400, (target, r.get_json())
        assert "link" in r.get_json()["message"] or "outside" in r.get_json()["message"]
    assert Path("/etc/passwd").read_bytes() == before
    assert not Path("/etc/visa-planted").exists() and not Path("/root/nothing-here").exists()
    assert audit(db) == []


def test_traversal_and_paths_outside_the_roots_are_refused_naming_the_problem(owner, machine) -> None:
    uid = machine["uid"]
    cases = {
        f"{HOME}/../../etc/passwd": "'..' is not allowed",
        "/etc/passwd": "outside your home",
        "relative/file": "must be absolute",
        f"{HOME}/a\x00b": "NUL",
    }
    for path, problem in cases.items():
        for url in (files_url(uid, "/content", path=path), files_url(uid, path=path)):
            r = owner.get(url)
            assert r.status_code == 400 and problem in r.get_json()["message"], (path, r.get_json())
        r = owner.put(files_url(uid, "/content", path=path), data=b"x")
        assert r.status_code == 400 and problem in r.get_json()["message"], (path, r.get_json())
    assert not Path("/etc/relative").exists()


def test_hostile_names_list_exactly_and_reach_no_header_unescaped(owner, machine) -> None:
    uid = machine["uid"]
    names = ["line\nbreak.txt", "tab\tand\rcr.txt", "quote\"; filename=evil.sh", "données-été-😀.dat",
             "<img src=x onerror=alert(1)>.html"]
    for name in names:
        as_owner("sh", "-c", 'printf "%s" "$1" > "$2"', "sh", name, str(HOME / name))
    # A name that is not UTF-8 is left out (and counted), not a crash.
    subprocess.run(["setpriv", f"--reuid={OWNER}", f"--regid={OWNER}", "--clear-groups", "--", "touch",
                    os.fsencode(str(HOME)) + b"/latin1-\xe9t\xe9"], check=True)
    r = owner.get(files_url(uid))
    assert r.status_code == 200, r.get_json()
    listing = r.get_json()
    assert listing["path"] == str(HOME) and listing["skipped"] == 1
    listed = {e["name"] for e in listing["entries"]}
    assert set(names) <= listed
    for name in names:
        r = owner.get(files_url(uid, "/content", path=f"{HOME}/{name}"))
        assert r.status_code == 200
        assert r.data == name.encode()
        disposition = r.headers["Content-Disposition"]
        assert not any(c in disposition for c in "\r\n\t\x00")
        assert disposition.startswith('attachment; filename="') and "filename*=UTF-8''" in disposition
        fallback = disposition.split('"')[1]
        assert all(c.isalnum() or c in "._ -" for c in fallback), disposition
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert r.headers["X-Content-Type-Options"] == "nosniff" or "sandbox" in r.headers["Content-Security-Policy"]


def test_printed_pdfs_over_ssh_are_the_regular_pdf_files_of_the_owners_pdf_folder(owner, machine) -> None:
    """cups-pdf's folder on a VM, planted by the owner's account: only regular *.pdf files come back."""
    as_owner("sh", "-c", f"mkdir {HOME}/PDF && printf '%%PDF-1.4' > {HOME}/PDF/scan.pdf"
                         f" && ln -s /etc/passwd {HOME}/PDF/passwd.pdf && mkdir {HOME}/PDF/dir.pdf")
    r = owner.get(f"/api/instances/{machine['uid']}/printed")
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["folder"] == f"{HOME}/PDF" and r.get_json()["unavailable"] is None
    assert [(f["name"], f["path"], f["size"]) for f in r.get_json()["files"]] == [("scan.pdf", f"{HOME}/PDF/scan.pdf", 8)]


def test_a_huge_listing_stops_at_the_limit(owner, machine) -> None:
    machine["settings"].transfers.max_listing = 100
    as_owner("sh", "-c", f"mkdir {HOME}/many && cd {HOME}/many && seq 1 1500 | xargs touch")
    r = owner.get(files_url(machine["uid"], path=f"{HOME}/many"))
    body = r.get_json()
    assert r.status_code == 200 and body["truncated"] is True and len(body["entries"]) == 100


def test_a_file_over_the_limit_is_refused_before_anything_is_written(owner, machine, db) -> None:
    settings = machine["settings"]
    settings.transfers.max_upload_bytes = 1000
    r = owner.put(files_url(machine["uid"], "/content", path=f"{HOME}/big.bin"), data=b"x" * 1001)
    assert r.status_code == 413 and "1001" in r.get_json()["message"], r.get_json()
    assert not (HOME / "big.bin").exists()
    # Resuming counts the offset too.
    as_owner("sh", "-c", f"head -c 900 /dev/zero > {HOME}/part.bin")
    r = owner.put(files_url(machine["uid"], "/content", path=f"{HOME}/part.bin", offset="900"), data=b"y" * 200)
    assert r.status_code == 413 and (HOME / "part.bin").stat().st_size == 900
    settings.transfers.max_download_bytes = 500
    r = owner.get(files_url(machine["uid"], "/content", path=f"{HOME}/part.bin"))
    assert r.status_code == 413 and "900" in r.get_json()["message"]
    assert audit(db) == []


def test_guests_may_not_transfer_users_may(api_client, machine, db) -> None:
    uid = machine["uid"]
    as_owner("sh", "-c", f"echo hello > {HOME}/hello.txt")
    guest = login(api_client, "viewer", "viewerpassword")
    assert guest.get(files_url(uid)).status_code == 403
    assert guest.get(files_url(uid, "/content", path=f"{HOME}/hello.txt")).status_code == 403
    assert guest.put(files_url(uid, "/content", path=f"{HOME}/g.txt"), data=b"g").status_code == 403
    assert not (HOME / "g.txt").exists()
    user = login(api_client, "colleague", "colleaguepassword")
    assert user.get(files_url(uid, "/content", path=f"{HOME}/hello.txt")).data == b"hello\n"
    r = user.put(files_url(uid, "/content", path=f"{HOME}/from-colleague.txt"), data=b"hi")
    assert r.status_code == 201, r.get_json()
    # Written as the owner's account, never as root.
    assert (HOME / "from-colleague.txt").stat().st_uid == int(subprocess.check_output(["id", "-u", OWNER]))
    events = audit(db)
    assert [(e.actor_name, e.action, e.details["bytes"]) for e in events] == [
        ("colleague", "instance.file.download", 6), ("colleague", "instance.file.upload", 2)]


def test_a_machine_with_another_host_key_is_refused(api_client, world, sshd, db) -> None:
    impostor = sshd(host_key=host_keys.private_openssh(world["settings"].resolved_secret_key(), "another"))
    with db.unit_of_work() as s:
        s.scalar(select(Instance).where(Instance.uid == world["uid"])).provider_state = {"ports": {"ssh": impostor}}
    c = login(api_client, OWNER, "ownerpassword")
    r = c.get(files_url(world["uid"]))
    assert r.status_code == 502 and "host key" in r.get_json()["message"].lower(), r.get_json()


# ---------------------------------------------------------------------- the transfers themselves


def test_upload_is_byte_identical_inside_and_download_of_a_file_written_inside_too(owner, machine, db) -> None:
    uid = machine["uid"]
    data = os.urandom(3 * 1024 * 1024 + 17)
    r = owner.put(files_url(uid, "/content", path=f"{HOME}/up.bin"), data=data)
    assert r.status_code == 201, r.get_json()
    assert r.get_json() == {"path": f"{HOME}/up.bin", "bytes": len(data), "size": len(data)}
    assert hashlib.sha256((HOME / "up.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
    # An existing file is not replaced unless asked.
    assert owner.put(files_url(uid, "/content", path=f"{HOME}/up.bin"), data=b"x").status_code == 409

    as_owner("sh", "-c", f"head -c 5000017 /dev/urandom > {HOME}/inside.bin")
    r = owner.get(files_url(uid, "/content", path=f"{HOME}/inside.bin"))
    assert r.status_code == 200 and r.headers["Content-Length"] == "5000017"
    assert r.data == (HOME / "inside.bin").read_bytes()
    events = audit(db)
    assert [(e.actor_name, e.action, e.details["path"], e.details["bytes"], e.details["complete"]) for e in events] == [
        (OWNER, "instance.file.upload", f"{HOME}/up.bin", len(data), True),
        (OWNER, "instance.file.download", f"{HOME}/inside.bin", 5000017, True),
    ]


def test_transfers_resume(owner, machine) -> None:
    uid = machine["uid"]
    data = os.urandom(1_000_000)
    url = files_url(uid, "/content", path=f"{HOME}/resumed.bin")
    assert owner.put(url, data=data[:400_000]).status_code == 201
    r = owner.put(files_url(uid, "/content", path=f"{HOME}/resumed.bin", offset="300000"), data=data[300_000:])
    assert r.status_code == 409 and r.get_json()["details"]["size"] == 400_000
    r = owner.put(files_url(uid, "/content", path=f"{HOME}/resumed.bin", offset="400000"), data=data[400_000:])
    assert r.status_code == 201 and r.get_json()["size"] == 1_000_000
    assert (HOME / "resumed.bin").read_bytes() == data
    r = owner.get(url, headers={"Range": "bytes=999000-"})
    assert r.status_code == 206 and r.data == data[999_000:]
    assert r.headers["Content-Range"] == "bytes 999000-999999/1000000"
    r = owner.get(url, headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.data == data[-10:]
    assert owner.get(url, headers={"Range": "bytes=2000000-"}).status_code == 416
    assert owner.get(url, headers={"Range": "bytes=1-2,5-6"}).status_code == 400
