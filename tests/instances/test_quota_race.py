"""Two creates at the same moment by one user whose quota allows one more: one machine, not two.
Each create counts the owner's machines, then inserts; both counts must not see the same number."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.factories import actor, make_catalogue, make_cloud, make_experiment, make_user
from visa.clock import FrozenClock
from visa.db import Database
from visa.errors import QuotaExceeded
from visa.instances import service
from visa.instances.models import Instance
from visa.instances.schemas import CreateInstance
from visa.settings import Settings
from visa.users.models import User


@pytest.mark.timeout(60)
def test_two_creates_at_once_cannot_both_pass_the_quota(committed_db: Database, tmp_path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    if committed_db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: no two transactions count at once")
    clock = FrozenClock()
    settings = Settings(data_dir=tmp_path, database_url=committed_db.url, secret_key="x")
    with committed_db.unit_of_work() as s:
        plan, _ = make_catalogue(s)
        make_cloud(s, clock)
        alice = make_user(s, clock, "alice", quota=2)
        exp = make_experiment(s, members=[alice])
        plan_id, exp_id = plan.id, exp.id
    with committed_db.unit_of_work() as s:  # one machine already: the quota allows one more
        owner = s.scalar(select(User).where(User.username == "alice"))
        service.create_instance(actor(owner, clock), s, clock, settings,
                                CreateInstance(name="first", plan_id=plan_id, experiment_ids=[exp_id]))

    # Both creates count, then wait for each other (a few seconds at most) before inserting: the
    # moment a busy server gives them anyway. A create that waits for the other one's commit
    # before it counts never meets it here.
    both_counted = threading.Barrier(2)
    count = service.active_instance_count

    def counted_then_wait(session: Any, user: User) -> int:
        n = count(session, user)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_counted.wait(timeout=3)
        return n

    monkeypatch.setattr(service, "active_instance_count", counted_then_wait)
    outcomes: list[object] = []

    def create(name: str) -> None:
        try:
            with committed_db.unit_of_work() as s:
                owner = s.scalar(select(User).where(User.username == "alice"))
                service.create_instance(actor(owner, clock), s, clock, settings,
                                        CreateInstance(name=name, plan_id=plan_id, experiment_ids=[exp_id]))
            outcomes.append("created")
        except Exception as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=create, args=(f"twin{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(outcomes) == 2, outcomes
    assert outcomes.count("created") == 1, outcomes
    refused = next(o for o in outcomes if o != "created")
    assert isinstance(refused, QuotaExceeded) and "quota is 2" in refused.message
    with committed_db.sessionmaker() as s:
        assert s.scalar(select(func.count(Instance.id)).where(Instance.deleted_at.is_(None))) == 2
