"""One leader at a time: the lease in-process, then two real scheduler processes on PostgreSQL
where the leader is killed (SIGKILL) in the middle of its work and the other takes over."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from tests.factories import make_cloud, make_flavour, make_image, make_plan, make_user
from tests.services import Inbox
from visa.clock import FrozenClock, system_clock
from visa.commands.executor import run_pending_commands
from visa.db import Base, Database
from visa.instances.models import (
    CommandAction,
    Instance,
    InstanceCommand,
    InstanceMember,
    InstanceState,
    MemberRole,
)
from visa.mail.models import SentEmail
from visa.migrate import upgrade
from visa.scheduler.lease import Lease, LeaseLost
from visa.scheduler.models import SchedulerLease
from visa.services import Services
from visa.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_lease_one_holder_and_takeover(db: Database, clock: FrozenClock) -> None:
    a = Lease(db, clock, 30, holder="a")
    b = Lease(db, clock, 30, holder="b")
    assert a.acquire() and a.held()
    assert not b.acquire() and not b.held()
    clock.advance(seconds=10)
    assert a.acquire()  # renewed
    clock.advance(seconds=25)
    assert not b.acquire()  # a renewed 25 s ago: still a's
    assert not a.held()  # a acts only while its lease has a third of its length left
    clock.advance(seconds=10)  # a died 35 s ago
    assert not a.held()
    assert b.acquire() and b.held()
    with db.unit_of_work() as s, pytest.raises(LeaseLost):
        a.check(s)
    assert not a.acquire()
    with db.unit_of_work() as s:
        b.check(s)
    b.release()
    assert a.acquire()


def _pg(request: pytest.FixtureRequest) -> Database:
    database = Database(request.getfixturevalue("pg_database_url"))
    upgrade(database.engine)
    return database


def _wave(database: Database, world: dict[str, int], n: int, wave: int) -> list[int]:
    """n instances idle for 10 days and warned 2 days ago (deleted now), n idle for 3.5 days (warned now)."""
    now = system_clock.now()
    ids = []
    with database.unit_of_work() as s:
        for i in range(2 * n):
            old = i < n
            created = now - (timedelta(days=10) if old else timedelta(days=3, hours=12))
            inst = Instance(
                uid=f"w{wave:03d}i{i:04d}", name=f"wave {wave} #{i}", owner_id=world["user"], plan_id=world["plan"],
                cloud_id=world["cloud"], state=InstanceState.STOPPED, secret="x" * 20, provider_state={},
                created_at=created, state_changed_at=created, terminates_at=now + timedelta(days=30),
                last_seen_at=created, inactivity_warned_at=now - timedelta(days=2) if old else None,
            )
            inst.members.append(InstanceMember(user_id=world["user"], role=MemberRole.OWNER, created_at=created))
            s.add(inst)
            s.flush()
            ids.append(inst.id)
    return ids


def _holder(database: Database) -> str | None:
    with database.sessionmaker() as s:
        row = s.get(SchedulerLease, "scheduler")
        return row.holder if row is not None and row.expires_at > system_clock.now() else None


def _wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.integration
def test_two_processes_leader_killed(request: pytest.FixtureRequest, tmp_path: Path,
                                     smtp_server: tuple[Inbox, int]) -> None:
    inbox, smtp_port = smtp_server
    database = _pg(request)
    clock = FrozenClock(system_clock.now())
    procs: dict[int, subprocess.Popen] = {}
    stop_executor = threading.Event()
    try:
        with database.unit_of_work() as s:
            cloud = make_cloud(s, clock, "local", kind="local")
            cloud.config = {"root_dir": str(tmp_path / "instances")}
            plan = make_plan(s, make_image(s, "desktop"), make_flavour(s, "small"))
            user = make_user(s, clock, "bob", email="bob@example.org", uid_number=None, gid_number=None)
            world = {"cloud": cloud.id, "plan": plan.id, "user": user.id}

        env = {k: v for k, v in os.environ.items() if not k.startswith("VISA_")}
        env.update({
            "VISA_DATABASE_URL": database.url, "VISA_SECRET_KEY": "k", "VISA_BASE_URL": "http://visa.test",
            "VISA_SCHEDULER__LEASE_SECONDS": "5", "VISA_SCHEDULER__LIFECYCLE_SECONDS": "1",
            "VISA_SCHEDULER__SYNC_SECONDS": "3600", "VISA_SCHEDULER__ACTIVITY_SECONDS": "3600",
            "VISA_SCHEDULER__CLEANUP_SECONDS": "3600", "VISA_SCHEDULER__OUTBOX_SECONDS": "2",
            "VISA_SMTP__ENABLED": "true", "VISA_SMTP__HOST": "127.0.0.1", "VISA_SMTP__PORT": str(smtp_port),
            "PYTHONUNBUFFERED": "1",
        })
        for n in range(2):
            log = open(tmp_path / f"scheduler{n}.log", "wb")  # noqa: SIM115
            p = subprocess.Popen([sys.executable, "-m", "visa.cli", "scheduler", "--no-worker"], cwd=ROOT,
                                 env={**env, "VISA_DATA_DIR": str(tmp_path / f"data{n}")},
                                 stdout=log, stderr=subprocess.STDOUT)
            procs[p.pid] = p

        # Commands are carried out here, so that killing a scheduler strands none of them.
        services = Services(settings=Settings(data_dir=tmp_path / "data", database_url=database.url, secret_key="k"),
                            database=database)
        stop_executor = threading.Event()

        def execute() -> None:
            while not stop_executor.wait(0.2):
                run_pending_commands(services)

        executor = threading.Thread(target=execute, daemon=True)
        executor.start()

        first = _wait(lambda: _holder(database), 30, "a leader")
        leader_pid = int(first.split(":")[1])
        assert leader_pid in procs
        ids: list[int] = []
        wave = 0
        # Waves of work while the leader runs; kill it once it has sent some emails.
        while len(inbox.messages) < 10:
            ids += _wave(database, world, 10, wave)
            wave += 1
            time.sleep(0.3)
            assert wave < 100, "the leader does not work"
        ids += _wave(database, world, 10, wave)
        wave += 1
        procs[leader_pid].send_signal(signal.SIGKILL)
        procs[leader_pid].wait(10)
        killed_at = time.monotonic()
        for _ in range(5):  # work keeps arriving while nobody leads
            ids += _wave(database, world, 10, wave)
            wave += 1
            time.sleep(0.3)

        second = _wait(lambda: (h := _holder(database)) and h != first and h, 30, "a new leader")
        took_over = time.monotonic() - killed_at
        assert int(second.split(":")[1]) in procs and int(second.split(":")[1]) != leader_pid

        def done() -> bool:
            with database.sessionmaker() as s:
                left = s.scalar(select(func.count(Instance.id)).where(
                    Instance.id.in_(ids),
                    ((Instance.inactivity_warned_at.is_(None)) | (Instance.uid.like("%i000%") & Instance.deleted_at.is_(None)))
                ))
                return left == 0
        _wait(done, 60, "all work done")

        def delivered() -> bool:  # emails the killed leader decided but never claimed go too
            with database.sessionmaker() as s:
                return not s.scalar(select(func.count(SentEmail.id)).where(
                    SentEmail.sent_at.is_(None), SentEmail.error.is_(None)))
        _wait(delivered, 30, "every decided email claimed")
        time.sleep(1.5)  # let any late duplicate show itself
        with database.sessionmaker() as s:
            instances = s.scalars(select(Instance).where(Instance.id.in_(ids))).all()
            old = [i for i in instances if int(i.uid[-4:]) < 10]
            new = [i for i in instances if int(i.uid[-4:]) >= 10]
            deletes = collections.Counter(s.scalars(select(InstanceCommand.instance_id).where(
                InstanceCommand.action == CommandAction.DELETE)))
            rows = s.scalars(select(SentEmail)).all()
        # No instance deleted twice; every due one deleted; every idle one warned once.
        assert all(i.state == InstanceState.DELETED and deletes[i.id] == 1 for i in old)
        assert all(i.deleted_at is None and i.inactivity_warned_at is not None and deletes[i.id] == 0 for i in new)
        assert len(rows) == len(instances)
        received = collections.Counter(inbox.keys())
        assert max(received.values()) == 1, [k for k, c in received.items() if c > 1]
        sent = {r.key for r in rows if r.sent_at is not None}
        lost = [r.key for r in rows if r.sent_at is None]
        # At most once: what was killed between claim and send is lost, never sent twice.
        assert set(received) == sent | (set(received) & set(lost))
        assert all(r.error == "sending" for r in rows if r.sent_at is None), [(r.key, r.error) for r in rows if r.sent_at is None]
        assert len(lost) <= 2, lost
        print(f"\n{wave} waves, {len(instances)} instances, {len(received)} emails, {len(lost)} lost to the kill; "
              f"takeover {took_over:.1f} s after SIGKILL")
    finally:
        stop_executor.set()
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        with database.engine.begin() as conn:
            names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        database.dispose()
