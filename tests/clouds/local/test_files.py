"""Files in and out of a real local session: OpenSSH's sftp-server run in the session's
sandbox as its account (``LocalProvider.open_sftp``), reached through the web API exactly as
a VM's sshd is. The sandbox's rules hold for transfers: the session's account writes, links
that lead out of the home are refused, and what is outside the sandbox is not even there."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from tests.clouds.local.test_provider import _cleanup, _spec, _wait_state
from tests.factories import make_cloud, make_flavour, make_image, make_plan, make_user
from visa.audit.models import AuditEvent
from visa.clock import FrozenClock
from visa.clouds.base import MountSpec, Server
from visa.clouds.local import LocalProvider
from visa.clouds.local import supervisor as local_session
from visa.db import Database
from visa.instances.models import Instance, InstanceMember, InstanceState, MemberRole

pytestmark = pytest.mark.integration

SFTP_SERVER = "/usr/lib/openssh/sftp-server"
PROCESSED = "/data/processed/ev-files/id00"


@pytest.fixture(scope="module")
def session_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalProvider, Server, Path]]:
    if not Path(SFTP_SERVER).exists():
        pytest.skip("openssh-sftp-server is not installed")
    base = tmp_path_factory.mktemp("files")
    processed = base / "facility" / "processed"  # made by the session's create, given to its account
    provider = LocalProvider("local", {"root_dir": str(base / "local-instances")})
    if provider.isolation_report().mode != "sandbox" or os.geteuid() != 0:
        pytest.skip("needs the local cloud's sandbox with accounts of its own (root and bwrap)")
    try:
        provider.create(_spec("files1", {"VNC": 5900}, owner_username="files-alice",
                              mounts=(MountSpec(str(processed), PROCESSED, False, "bind"),)))
        server = _wait_state(provider, "files1")
        assert server.state == InstanceState.ACTIVE, server.fault
        yield provider, server, processed
    finally:
        _cleanup(provider)


@pytest.fixture
def client(app, db: Database, clock: FrozenClock, api_client, session_world) -> dict[str, Any]:
    provider, server, processed = session_world
    app.extensions["visa"].set_provider("local", provider)
    with db.unit_of_work() as s:
        cloud = make_cloud(s, clock, "local", kind="local")
        plan = make_plan(s, make_image(s, "desktop"), make_flavour(s, "small"))
        owner = make_user(s, clock, "files-alice", password="alicepassword")
        now = clock.now()
        inst = Instance(uid=secrets.token_hex(6), name="files", owner_id=owner.id, plan_id=plan.id, cloud_id=cloud.id,
                        cloud_server_id=server.id, state=InstanceState.ACTIVE, secret="s" * 20, provider_state={},
                        address="local", created_at=now, state_changed_at=now,
                        terminates_at=now.replace(year=now.year + 1))
        inst.members.append(InstanceMember(user_id=owner.id, role=MemberRole.OWNER, created_at=now))
        s.add(inst)
        s.flush()
        uid = inst.uid
    c = api_client()
    assert c.login("files-alice", "alicepassword").status_code == 200
    record = local_session.read_json(provider.instance_dir(server.id) / local_session.INSTANCE_FILE)
    return {"c": c, "uid": uid, "provider": provider, "server": server, "processed": processed,
            "home": record["home"], "host_home": Path(record.get("home_dir") or provider.instance_dir(server.id) / local_session.HOME_DIR),
            "account_uid": record["account"]["uid"]}


def url(uid: str, what: str = "", **query: str) -> str:
    return f"/api/instances/{uid}/files{what}" + (f"?{urlencode(query)}" if query else "")


def inside(world: dict[str, Any], script: str) -> None:
    out = world["provider"].exec_in_session(world["server"].id, ["sh", "-c", script])
    assert out.returncode == 0, out.stderr


def test_links_inside_the_session_lead_nowhere_outside(client) -> None:
    w, c, uid, home = client, client["c"], client["uid"], client["home"]
    inside(w, "ln -sfn / ~/root-link && ln -sfn /etc/passwd ~/passwd-link")
    r = c.get(url(uid, "/content", path=f"{home}/root-link/etc/passwd"))
    assert r.status_code == 400 and "leads outside" in r.get_json()["message"], r.get_json()
    r = c.put(url(uid, "/content", path=f"{home}/passwd-link", overwrite="true"), data=b"x")
    assert r.status_code == 400 and "link" in r.get_json()["message"]
    # The host's own paths are not in the sandbox at all: visa's data directory is not there.
    data_dir = w["provider"].root
    r = c.get(url(uid, path=f"{home}/../../{data_dir}"))
    assert r.status_code == 400


def test_upload_and_download_are_byte_identical_and_run_as_the_sessions_account(client, db) -> None:
    w, c, uid, home = client, client["c"], client["uid"], client["home"]
    r = c.get(url(uid))
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["roots"] == [home, PROCESSED]
    # Past 100 writes in flight (32 KiB each) paramiko polls the channel: more than 3.2 MB.
    data = os.urandom(5 * 1024 * 1024 + 5)
    name = f"up-{secrets.token_hex(3)}.bin"
    r = c.put(url(uid, "/content", path=f"{home}/{name}"), data=data)
    assert r.status_code == 201, r.get_json()
    on_host = w["host_home"] / name
    assert hashlib.sha256(on_host.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert on_host.stat().st_uid == w["account_uid"] != 0
    # Processed data: writable, through the sandbox's bind.
    r = c.put(url(uid, "/content", path=f"{PROCESSED}/{name}"), data=data[:1000])
    assert r.status_code == 201 and (w["processed"] / name).read_bytes() == data[:1000]

    inside(w, "head -c 3000001 /dev/urandom > ~/inside.bin")
    r = c.get(url(uid, "/content", path=f"{home}/inside.bin"))
    assert r.status_code == 200 and r.data == (w["host_home"] / "inside.bin").read_bytes()
    with db.sessionmaker() as s:
        events = s.query(AuditEvent).filter(AuditEvent.action.like("instance.file.%")).order_by(AuditEvent.id).all()
        assert [(e.action, e.details["bytes"]) for e in events] == [
            ("instance.file.upload", len(data)), ("instance.file.upload", 1000), ("instance.file.download", 3000001)]


def test_no_sftp_server_is_a_clear_error(client) -> None:
    provider = client["provider"]
    saved = provider.sftp_server
    provider.sftp_server = "/nonexistent/sftp-server"
    try:
        r = client["c"].get(url(client["uid"]))
    finally:
        provider.sftp_server = saved
    assert r.status_code == 502 and "openssh-sftp-server" in r.get_json()["message"]


# ---------------------------------------------------------------------- printed PDFs


def printed(w: dict[str, Any]) -> dict[str, Any]:
    r = w["c"].get(f"/api/instances/{w['uid']}/printed")
    assert r.status_code == 200, r.get_json()
    return r.get_json()  # type: ignore[no-any-return]


HOSTILE_NAME = '<img src=x onerror="alert(1)">&amp;..%2F..%2Fetc.pdf'


def test_printed_offers_regular_pdf_files_only(client) -> None:
    """The attacker's test: the session owns ~/PDF and plants what it likes there."""
    w, home = client, client["home"]
    inside(w, "rm -rf ~/PDF ~/elsewhere && mkdir ~/PDF ~/elsewhere && printf '%%PDF-1.4 secret' > ~/elsewhere/s.pdf"
              " && ln -s ~/elsewhere/s.pdf ~/PDF/link.pdf && ln -s /etc/passwd ~/PDF/passwd.pdf"
              " && mkdir ~/PDF/folder.pdf && mkfifo ~/PDF/fifo.pdf && printf x > ~/PDF/notes.txt"
              " && truncate -s 30G ~/PDF/huge.pdf"
              f" && printf '%%PDF-1.4 ok' > ~/PDF/'{HOSTILE_NAME}'")
    listing = printed(w)
    assert listing["folder"] == f"{home}/PDF"
    files = {f["name"]: f for f in listing["files"]}
    assert set(files) == {HOSTILE_NAME, "huge.pdf"}, files
    assert files["huge.pdf"]["downloadable"] is False and files["huge.pdf"]["size"] == 30 * 2**30
    assert files[HOSTILE_NAME] == {"name": HOSTILE_NAME, "path": f"{home}/PDF/{HOSTILE_NAME}", "size": 11,
                                   "modified": files[HOSTILE_NAME]["modified"], "downloadable": True}
    r = w["c"].get(url(w["uid"], "/content", path=files[HOSTILE_NAME]["path"]))
    assert r.status_code == 200 and r.data == b"%PDF-1.4 ok"
    assert "<" not in r.headers["Content-Disposition"] and "/" not in r.headers["Content-Disposition"].split(";")[1]
    r = w["c"].get(url(w["uid"], "/content", path=files["huge.pdf"]["path"]))
    assert r.status_code == 413


def test_a_pdf_folder_swapped_for_a_link_offers_nothing(client) -> None:
    w = client
    inside(w, "rm -rf ~/PDF ~/elsewhere && mkdir ~/elsewhere && printf '%%PDF-1.4' > ~/elsewhere/a.pdf"
              " && ln -s ~/elsewhere ~/PDF")
    assert printed(w)["files"] == []
    inside(w, "rm ~/PDF && ln -s / ~/PDF")
    assert printed(w)["files"] == []
    inside(w, "rm ~/PDF && printf x > ~/PDF")
    assert printed(w)["files"] == []
    inside(w, "rm ~/PDF")
    assert printed(w)["files"] == []  # nothing printed yet


def test_printed_of_a_machine_not_running_says_why_without_failing(client, db: Database) -> None:
    """The desktop page polls this: an answer, never a 4xx or 5xx, while nothing can be listed."""
    with db.unit_of_work() as s:
        s.scalars(select(Instance).where(Instance.uid == client["uid"])).one().state = InstanceState.STOPPED
    assert printed(client) == {"folder": None, "files": [], "unavailable": "the instance is stopped"}


def test_lp_inside_the_session_prints_a_pdf_into_its_home(client) -> None:
    """The desktop's own printer: lp talks to the session's CUPS scheduler, the PDF lands in
    ~/PDF as the session's account, and visa offers it for download."""
    w = client
    if not shutil.which("cupsd") or not shutil.which("pdftotext"):
        pytest.skip("needs cups and poppler-utils")
    inside(w, "rm -rf ~/PDF; printf 'Beamline ID21 report\\nsecond line\\n' > /tmp/report.txt"
              " && for i in $(seq 100); do lpstat -r >/dev/null 2>&1 && break; sleep 0.1; done"
              " && lp -t report.txt /tmp/report.txt")
    deadline = time.monotonic() + 30
    while not (files := printed(w)["files"]):
        assert time.monotonic() < deadline, "no PDF came out of the session's printer"
        time.sleep(0.2)
    assert [f["name"] for f in files] == ["report.pdf"]
    assert (w["host_home"] / "PDF" / "report.pdf").stat().st_uid == w["account_uid"] != 0
    r = w["c"].get(url(w["uid"], "/content", path=files[0]["path"]))
    assert r.status_code == 200 and r.data.startswith(b"%PDF-")
    text = subprocess.run(["pdftotext", "-", "-"], input=r.data, capture_output=True, check=True).stdout.decode()
    assert "Beamline ID21 report" in text and "second line" in text


if not shutil.which("bwrap"):
    pytest.skip("bubblewrap missing", allow_module_level=True)
