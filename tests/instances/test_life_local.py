"""The life of an instance on the local cloud, with real desktops: create, become ACTIVE when the
desktop answers, stop, start, delete (gracefully, soft-deleted with its history)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.clouds.accounts import remove_account, remove_recorded_accounts
from tests.factories import actor, make_experiment, make_flavour, make_image, make_plan, make_user
from visa.catalogue.models import Protocol
from visa.clouds.local import LocalProvider
from visa.clouds.models import Cloud
from visa.commands.executor import run_pending_commands
from visa.commands.sync import TRANSITION_GRACE, sync_cloud
from visa.db import Database
from visa.instances import service
from visa.instances.models import CommandAction, CommandState, Instance, InstanceCommand, InstanceState
from visa.instances.schemas import CreateInstance
from visa.services import Services
from visa.settings import Settings


@pytest.fixture
def local(tmp_path: Path, committed_db: Database, clock):
    """The worker runs in a thread of its own: the data is committed."""
    db = committed_db
    facility = tmp_path / "facility"
    (facility / "visitor" / "ev280" / "id21").mkdir(parents=True)
    (facility / "visitor" / "ev280" / "id21" / "scan_0001.h5").write_text("raw data")
    (facility / "processed" / "ev280" / "id21").mkdir(parents=True)
    settings = Settings(data_dir=tmp_path / "data", database_url=db.url, secret_key="k")
    services = Services(settings=settings, database=db, clock=clock)
    with db.unit_of_work() as s:
        s.add(Cloud(name="local", kind="local", enabled=True, created_at=clock.now(), config={
            "root_dir": str(tmp_path / "instances"),
            "provisioning": {
                "mount_type": "bind",
                "raw_mount_template": str(facility / "visitor/{proposal}/{beamline}"),
                "processed_mount_template": str(facility / "processed/{proposal}/{beamline}"),
            },
        }))
        # No uid of the facility's: the session account is made from the cloud's uid_range.
        alice = make_user(s, clock, "alice", uid_number=None, gid_number=None)
        exp = make_experiment(s, members=[alice], proposal="ev280", instrument="id21")
        plan = make_plan(s, make_image(s, "desktop", {Protocol.VNC: 5901}), make_flavour(s, "esrf.medium"))
        inst = service.create_instance(
            actor(alice, clock), s, clock, settings,
            CreateInstance(name="analysis", plan_id=plan.id, experiment_ids=[exp.id], screen_width=1024, screen_height=768),
        )
        uid = inst.uid
    # An account of alice's name left by an earlier run is not hers (this database records none).
    remove_account(LocalProvider("local", {"root_dir": str(tmp_path / "instances")}).account_name("alice"))
    yield services, uid
    services.close()
    # Whatever the test left running is stopped and removed, and the account made for alice.
    provider = services.provider("local")
    for server in provider.list_servers():
        provider.delete(server.id)
    remove_recorded_accounts(db)


def _state(db: Database, uid: str) -> Instance:
    with db.sessionmaker() as s:
        return s.scalar(select(Instance).where(Instance.uid == uid))


def _sync_until(services: Services, uid: str, wanted: InstanceState, timeout: float = 30) -> Instance:
    deadline = time.monotonic() + timeout
    while True:
        sync_cloud(services, "local", probe_timeout=1)
        inst = _state(services.database, uid)
        if inst.state == wanted or time.monotonic() > deadline:
            return inst
        services.clock.advance(seconds=1)
        time.sleep(0.3)


def _act(services: Services, uid: str, action: CommandAction) -> None:
    with services.database.unit_of_work() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == uid))
        owner = actor(inst.owner, services.clock)
        service.request_action(owner, s, services.clock, inst, action)
    assert run_pending_commands(services) == 1


def test_create_to_active_stop_start_delete(local) -> None:
    services, uid = local
    db = services.database
    assert _state(db, uid).state == InstanceState.BUILDING
    assert run_pending_commands(services) == 1
    inst = _state(db, uid)
    assert inst.cloud_server_id == uid and inst.address == "127.0.0.1"
    assert inst.provider_state["sockets"]["VNC"].endswith(f"/{uid}/sockets/vnc.sock")
    inst = _sync_until(services, uid, InstanceState.ACTIVE)
    assert inst.state == InstanceState.ACTIVE, inst.error_message

    # The experiment's data is where a VM would have it, read-only.
    provider = services.provider("local")
    out = provider.exec_in_session(uid, ["cat", "/data/visitor/ev280/id21/scan_0001.h5"])
    assert out.stdout == b"raw data"

    _act(services, uid, CommandAction.STOP)
    assert _sync_until(services, uid, InstanceState.STOPPED).state == InstanceState.STOPPED
    _act(services, uid, CommandAction.START)
    assert _sync_until(services, uid, InstanceState.ACTIVE).state == InstanceState.ACTIVE

    _act(services, uid, CommandAction.DELETE)
    inst = _sync_until(services, uid, InstanceState.DELETED)
    assert inst.state == InstanceState.DELETED and inst.deleted_at is not None
    assert provider.get(uid) is None
    with db.sessionmaker() as s:
        history = [(c.action, c.state) for c in s.scalars(select(InstanceCommand).order_by(InstanceCommand.id))]
    assert history == [
        (CommandAction.CREATE, CommandState.DONE), (CommandAction.STOP, CommandState.DONE),
        (CommandAction.START, CommandState.DONE), (CommandAction.DELETE, CommandState.DONE),
    ]


def test_lost_machine_becomes_error_and_create_failure_is_readable(local) -> None:
    services, uid = local
    run_pending_commands(services)
    services.provider("local").delete(uid)  # someone removed it behind visa's back
    # A machine just asked for may not be listed yet (Nova lists a server once it is scheduled):
    # for a short while it stays BUILDING, then it is taken for lost.
    sync_cloud(services, "local", probe_timeout=1)
    assert _state(services.database, uid).state == InstanceState.BUILDING
    services.clock.advance(seconds=TRANSITION_GRACE.total_seconds() + 1)
    sync_cloud(services, "local", probe_timeout=1)
    inst = _state(services.database, uid)
    assert inst.state == InstanceState.ERROR and "no longer has" in inst.error_message


def test_a_command_left_running_by_a_dead_process_is_carried_out(local) -> None:
    services, uid = local
    from visa.commands.executor import claim_pending

    assert claim_pending(services) != []  # this "process" dies here, its command RUNNING
    assert run_pending_commands(services) == 0
    services.clock.advance(seconds=10)  # two heartbeats missed: still its claimer's
    assert run_pending_commands(services) == 0
    services.clock.advance(seconds=6)  # three (scheduler.command_missed_heartbeats)
    assert run_pending_commands(services) == 1
    assert _state(services.database, uid).cloud_server_id == uid


def test_a_computing_local_session_is_seen_as_active_without_a_browser(local) -> None:
    from visa.instances.activity import ActivityProbe

    services, uid = local
    run_pending_commands(services)
    assert _sync_until(services, uid, InstanceState.ACTIVE).state == InstanceState.ACTIVE
    probe = ActivityProbe(services, sample_gap=1.0)
    idle = probe.run()
    assert idle.probed == 1 and idle.failed == {} and idle.computing == []
    assert _state(services.database, uid).last_compute_at is None

    provider = services.provider("local")
    started = provider.exec_in_session(uid, ["sh", "-c", "timeout 6 sh -c 'while :; do :; done' >/dev/null 2>&1 &"])
    assert started.returncode == 0
    time.sleep(1.5)
    busy = probe.run()
    assert busy.failed == {} and len(busy.computing) == 1
    assert _state(services.database, uid).last_compute_at == services.clock.now()


def test_the_worker_follows_an_instance_it_just_created_until_its_desktop_answers(local) -> None:
    from visa.commands.worker import Worker

    services, uid = local
    # The usual sync of moving instances is a minute apart here: only the close following
    # after the create can make it ACTIVE before the wait below gives up.
    worker = Worker(services, sync_seconds=60.0)
    worker.start()
    try:
        worker.wake()
        deadline = time.monotonic() + 40
        while _state(services.database, uid).state != InstanceState.ACTIVE and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        worker.stop()
    assert _state(services.database, uid).state == InstanceState.ACTIVE
