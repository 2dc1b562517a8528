"""Claiming commands (visa.commands.executor) and following unstable instances
(visa.commands.worker) on both backends: an instance's commands one at a time, a claim that
lives while its claimer beats and is given back after missed beats, a former claimer that cannot
overwrite the new one's outcome, concurrent claimers that never share a command (``SKIP
LOCKED`` on PostgreSQL), and one follower whose list calls are 0 when nothing moves."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.factories import make_cloud, make_flavour, make_image, make_plan, make_user
from visa.catalogue.models import Protocol
from visa.commands import executor
from visa.commands.worker import Worker
from visa.db import Database
from visa.instances.models import CommandAction, CommandState, Instance, InstanceCommand, InstanceState
from visa.scheduler.lease import follower_lease
from visa.services import Services
from visa.settings import Settings


@pytest.fixture
def world(committed_db: Database, clock, tmp_path: Path):
    settings = Settings(data_dir=tmp_path / "data", database_url=committed_db.url, secret_key="k")
    services = Services(settings=settings, database=committed_db, clock=clock)
    with committed_db.unit_of_work() as s:
        owner = make_user(s, clock, "owner")
        plan = make_plan(s, make_image(s, "desktop", {Protocol.VNC: 5901}), make_flavour(s, "small"))
        cloud = make_cloud(s, clock)
        cloud.config = {"root_dir": str(tmp_path / "instances")}
        ids = []
        for n in range(6):
            inst = Instance(uid=f"cmd{n:09d}", name=f"m{n}", owner=owner, plan=plan, cloud=cloud,
                            state=InstanceState.STOPPED, secret="s" * 24, created_at=clock.now(),
                            terminates_at=clock.now() + timedelta(days=1))
            s.add(inst)
            s.flush()
            ids.append(inst.id)
    yield services, ids
    services.close()


def _queue(db: Database, clock, instance_id: int, action: CommandAction = CommandAction.STOP) -> int:
    with db.unit_of_work() as s:
        cmd = InstanceCommand(instance_id=instance_id, action=action, state=CommandState.PENDING, created_at=clock.now())
        s.add(cmd)
        s.flush()
        return cmd.id


def test_a_claim_lives_while_its_claimer_beats_and_moves_after_missed_beats(world, clock) -> None:
    services, ids = world
    first = _queue(services.database, clock, ids[0])
    later = _queue(services.database, clock, ids[0], CommandAction.START)  # same instance: after the first
    assert executor.claim_pending(services) == [(first, _cloud(services, ids[0]))]
    assert executor.claim_pending(services) == []  # the second waits for the first

    for _ in range(4):  # 20 s of beats, 5 s apart: never stale
        clock.advance(seconds=5)
        assert executor.heartbeat(services, [first]) == 1
        assert executor.claim_pending(services) == []

    clock.advance(seconds=16)  # three beats missed: its claimer is taken for dead
    real = executor.PROCESS
    try:
        executor.PROCESS = "other-host:1:abcd"
        assert [c for c, _ in executor.claim_pending(services)] == [first]
        executor.PROCESS = real
        assert executor.heartbeat(services, [first]) == 0  # no longer ours
        executor._finish(services, first, CommandState.FAILED, "late")  # the former claimer writes nothing
        with services.database.sessionmaker() as s:
            cmd = s.get(InstanceCommand, first)
            assert cmd.state == CommandState.RUNNING and cmd.claimed_by == "other-host:1:abcd"
        executor.PROCESS = "other-host:1:abcd"
        executor._finish(services, first, CommandState.DONE)
    finally:
        executor.PROCESS = real
    assert [c for c, _ in executor.claim_pending(services)] == [later]


def _cloud(services: Services, instance_id: int) -> int:
    with services.database.sessionmaker() as s:
        return s.get(Instance, instance_id).cloud_id


def test_concurrent_claimers_never_share_a_command(world, clock) -> None:
    services, ids = world
    queued = {_queue(services.database, clock, i) for i in ids}
    got: list[list[int]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(3)

    def claimer() -> None:
        barrier.wait()
        mine = [c for c, _ in executor.claim_pending(services, limit=2)]
        with lock:
            got.append(mine)

    threads = [threading.Thread(target=claimer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    flat = [c for mine in got for c in mine]
    assert len(flat) == len(set(flat))  # no command claimed twice
    assert set(flat) <= queued
    if services.database.engine.dialect.name == "postgresql":
        assert set(flat) == queued  # SKIP LOCKED: each took rows the others had not locked


def test_per_cloud_slots(world, clock) -> None:
    services, ids = world
    for i in ids:
        _queue(services.database, clock, i)
    cloud = _cloud(services, ids[0])
    assert len(executor.claim_pending(services, free=lambda _c: 2)) == 2
    assert executor.claim_pending(services, full=[cloud]) == []


class ListCounter:
    """The real local provider, with its list calls counted."""

    def __init__(self, real: Any) -> None:
        self.real, self.lists = real, 0

    def list_servers(self) -> list:
        self.lists += 1
        return self.real.list_servers()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_one_follower_and_no_list_call_when_nothing_moves(world, clock) -> None:
    services, ids = world
    counter = ListCounter(services.provider("local"))
    services.set_provider("local", counter)
    lease_seconds = services.settings.scheduler.lease_seconds
    workers = [Worker(services, lease=follower_lease(services.database, clock, lease_seconds, holder=f"p{n}"))
               for n in range(4)]
    for _ in range(3):
        for w in workers:
            w.run_once()
    assert counter.lists == 0  # nothing unstable
    assert sum(w.follows() for w in workers) == 1

    with services.database.unit_of_work() as s:
        inst = s.get(Instance, ids[1])
        inst.state, inst.cloud_server_id = InstanceState.STARTING, "gone-session"
        inst.state_changed_at = clock.now()
    for w in workers:
        w.run_once()
    assert counter.lists == 1  # the follower alone
    with services.database.sessionmaker() as s:
        assert s.scalar(select(Instance.state).where(Instance.id == ids[1])) == InstanceState.ERROR


def test_a_machine_just_asked_for_is_not_lost_before_the_cloud_lists_it(world, clock) -> None:
    """Nova lists a new server only once it is scheduled: a list right after the create lacks it."""
    from visa.commands.sync import TRANSITION_GRACE, sync_cloud

    services, ids = world
    with services.database.unit_of_work() as s:
        inst = s.get(Instance, ids[1])
        inst.state, inst.cloud_server_id, inst.state_changed_at = InstanceState.BUILDING, "not-listed-yet", clock.now()
    sync_cloud(services, "local", probe_timeout=0.1)
    with services.database.sessionmaker() as s:
        assert s.get(Instance, ids[1]).state == InstanceState.BUILDING
    clock.advance(seconds=TRANSITION_GRACE.total_seconds() + 1)
    sync_cloud(services, "local", probe_timeout=0.1)
    with services.database.sessionmaker() as s:
        assert s.get(Instance, ids[1]).state == InstanceState.ERROR
