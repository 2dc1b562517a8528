"""Files in and out of a real local session: OpenSSH's sftp-server run in the session's
sandbox as its account (``LocalProvider.open_sftp``), reached through the web API exactly as
a VM's sshd is. The sandbox's rules hold for transfers: the session's account writes, links
that lead out of the home are refused, and what is outside the sandbox is not even there."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.clouds.test_local import _cleanup, _spec, _wait_state
from tests.factories import make_cloud, make_flavour, make_image, make_plan, make_user
from visa.audit.models import AuditEvent
from visa.clock import FrozenClock
from visa.clouds import local_session
from visa.clouds.base import MountSpec, Server
from visa.clouds.local import LocalProvider
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
    app.extensions["visa"]._providers["local"] = provider
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


if not shutil.which("bwrap"):
    pytest.skip("bubblewrap missing", allow_module_level=True)
