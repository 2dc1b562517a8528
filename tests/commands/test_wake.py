"""A queued command is only a row: the commit of the transaction that added it wakes the command
workers, through the one session hook that tells the event streams what changed (both databases;
on PostgreSQL also a worker of another process, through LISTEN/NOTIFY). The workers here poll
once a minute, so only the hook can have them claim within the few seconds waited for."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.factories import make_cloud, make_flavour, make_image, make_plan, make_user
from visa import pubsub
from visa.catalogue.models import Protocol
from visa.commands.worker import Worker
from visa.db import Database
from visa.instances.models import CommandAction, CommandState, Instance, InstanceCommand, InstanceState
from visa.services import Services
from visa.settings import Settings

MINUTE = 60.0


@pytest.fixture
def stopped(committed_db: Database, clock, tmp_path: Path) -> Iterator[tuple[Services, int]]:
    settings = Settings(data_dir=tmp_path / "data", database_url=committed_db.url, secret_key="k")
    services = Services(settings=settings, database=committed_db, clock=clock)
    with committed_db.unit_of_work() as s:
        owner = make_user(s, clock, "owner")
        plan = make_plan(s, make_image(s, "desktop", {Protocol.VNC: 5901}), make_flavour(s, "small"))
        cloud = make_cloud(s, clock)
        cloud.config = {"root_dir": str(tmp_path / "instances")}
        inst = Instance(uid="wake00000001", name="m", owner=owner, plan=plan, cloud=cloud,
                        state=InstanceState.STOPPED, secret="s" * 24, created_at=clock.now(),
                        terminates_at=clock.now() + timedelta(days=1))
        s.add(inst)
        s.flush()
        instance_id = inst.id
    yield services, instance_id
    services.close()


def _started(services: Services) -> Worker:
    worker = Worker(services, poll_seconds=MINUTE, sync_seconds=MINUTE)
    worker.start()
    time.sleep(0.3)  # in its first wait
    return worker


def _claimed_within(db: Database, command_id: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with db.sessionmaker() as s:
            if s.scalar(select(InstanceCommand.state).where(InstanceCommand.id == command_id)) != CommandState.PENDING:
                return True
        time.sleep(0.1)
    return False


def _queue(services: Services, instance_id: int, clock) -> int:
    """A command as the services queue one: its row, and nothing else."""
    with services.database.unit_of_work() as s:
        cmd = InstanceCommand(instance_id=instance_id, action=CommandAction.STOP, state=CommandState.PENDING,
                              created_at=clock.now())
        s.add(cmd)
        s.flush()
        return cmd.id


def test_the_commit_that_queues_a_command_wakes_this_processs_worker(stopped, clock) -> None:
    services, instance_id = stopped
    worker = _started(services)
    try:
        command_id = _queue(services, instance_id, clock)
        assert _claimed_within(services.database, command_id, 10)
    finally:
        worker.stop()


def test_a_rolled_back_command_wakes_nobody_and_other_changes_leave_the_worker_asleep(stopped, clock) -> None:
    services, instance_id = stopped
    heard: list[str] = []
    unhook = services.database.on_commit(heard.append)
    try:
        with pytest.raises(RuntimeError), services.database.unit_of_work() as s:
            s.add(InstanceCommand(instance_id=instance_id, action=CommandAction.START, state=CommandState.PENDING,
                                  created_at=clock.now()))
            s.flush()
            raise RuntimeError("changed my mind")
        with services.database.unit_of_work() as s:
            inst = s.get(Instance, instance_id)
            assert inst is not None
            inst.name = "renamed"
        assert heard == [f"i{instance_id}"]  # the streams hear the rename; no command key
        with services.database.unit_of_work() as s:
            s.add(InstanceCommand(instance_id=instance_id, action=CommandAction.START, state=CommandState.PENDING,
                                  created_at=clock.now()))
        assert heard[-1] == f"c,i{instance_id}"  # a bare row: the hook says a command waits
    finally:
        unhook()


def test_on_postgresql_a_worker_of_another_process_hears_the_commit(stopped, clock) -> None:
    services, instance_id = stopped
    if not pubsub.supported(services.database.url):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite workers poll across processes")
    # Another process: its own Database on the same URL, so only the notification reaches it.
    other = Services(settings=services.settings, database=Database(services.database.url), clock=clock)
    worker = _started(other)
    try:
        assert pubsub.wait_connected(pubsub.listener(services.database.url))
        command_id = _queue(services, instance_id, clock)
        assert _claimed_within(services.database, command_id, 10)
    finally:
        worker.stop()
        other.close()
        other.database.dispose()
