"""Usage over time: the job samples what instances hold, prunes past the keep, and the series
read back average the samples per point of a day, a week or a month."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.factories import make_flavour, make_plan
from tests.services import add_instance
from visa.catalogue.models import Image, Plan
from visa.clock import FrozenClock
from visa.instances.models import InstanceState
from visa.services import Services
from visa.usage import jobs
from visa.usage.models import TOTAL, UsageSample


@pytest.fixture
def app(services: Services, db, clock):
    from visa.web.app import create_app

    application = create_app(services.settings, database=db, clock=clock)
    application.config["TESTING"] = True
    return application


def _gpu_plan(services: Services) -> int:
    with services.database.unit_of_work() as s:
        image = s.scalar(select(Image))
        return make_plan(s, image, make_flavour(s, "gpu", cores=16, memory_mb=32768, gpu="NVIDIA A40")).id


def _rows(services: Services) -> dict[tuple[str, str], UsageSample]:
    with services.database.sessionmaker() as s:
        latest = s.scalar(select(func.max(UsageSample.taken_at)))
        return {(r.cloud, r.flavour): r for r in s.scalars(select(UsageSample).where(UsageSample.taken_at == latest))}


def test_a_sample_counts_per_cloud_and_flavour(services: Services, world, clock: FrozenClock) -> None:
    gpu = _gpu_plan(services)
    with services.database.unit_of_work() as s:
        add_instance(s, clock, world)  # ACTIVE, seen now: an active session
        add_instance(s, clock, world, "sam", last_seen_at=clock.now() - timedelta(hours=2))
        add_instance(s, clock, world, state=InstanceState.STOPPED)  # counted, holds nothing
        add_instance(s, clock, world, plan_id=gpu)
        add_instance(s, clock, world, plan_id=gpu, deleted_at=clock.now())  # gone: not counted
    assert jobs.run(services) == 3
    rows = _rows(services)
    small, big, total = rows[("local", "small")], rows[("local", "gpu")], rows[(TOTAL, TOTAL)]
    assert (small.instances, small.active_sessions, small.cores, small.memory_mb, small.gpus) == (3, 1, 8, 8192, 0)
    assert (big.instances, big.active_sessions, big.cores, big.memory_mb, big.gpus) == (1, 1, 16, 32768, 1)
    assert (total.instances, total.active_sessions, total.cores, total.gpus) == (4, 2, 24, 1)


def test_nothing_running_is_a_zero_not_a_gap(services: Services, world, clock: FrozenClock) -> None:
    assert jobs.run(services) == 1
    assert _rows(services)[(TOTAL, TOTAL)].instances == 0


def test_samples_are_pruned_after_the_keep(services: Services, world, clock: FrozenClock) -> None:
    services.settings.scheduler.usage_keep_days = 2
    for _ in range(4):
        jobs.run(services)
        clock.advance(days=1)
    jobs.run(services)
    with services.database.sessionmaker() as s:
        kept = sorted(s.scalars(select(UsageSample.taken_at).distinct()))
    assert kept == [clock.now() - timedelta(days=2), clock.now() - timedelta(days=1), clock.now()]


def test_series_average_the_samples_of_each_point(services: Services, world, clock: FrozenClock,
                                                   api_client) -> None:
    from visa.actor import SYSTEM
    from visa.usage.service import usage_series

    with services.database.unit_of_work() as s:
        inst = add_instance(s, clock, world)
        iid = inst.id
    # Twelve samples in one hour: one instance for six of them, two for the other six.
    for i in range(12):
        if i == 6:
            with services.database.unit_of_work() as s:
                add_instance(s, clock, world, "sam")
        jobs.run(services)
        clock.advance(minutes=5)
    with services.database.sessionmaker() as s:
        day = usage_series(SYSTEM, s, clock, "day")
        week = usage_series(SYSTEM, s, clock, "week")
    assert day.step_seconds == 300 and len(day.times) == 289
    sampled = [v for v in day.totals["instances"] if v is not None]
    assert sampled == [1.0] * 6 + [2.0] * 6
    assert week.step_seconds == 3600
    points = [v for v in week.totals["instances"] if v is not None]
    assert sum(points) / len(points) == pytest.approx(1.5, abs=0.5) and max(points) <= 2
    assert set(week.by_flavour) == {"local/small"} and iid

    alice, root = api_client(), api_client()
    _password(services, "alice")
    assert alice.login("alice", "alice-password").status_code == 200
    assert root.login("root", "rootpassword").status_code == 200
    assert alice.get("/api/admin/usage").status_code == 403
    r = root.get("/api/admin/usage?span=day")
    assert r.status_code == 200
    body = r.get_json()
    assert [v for v in body["totals"]["cores"] if v is not None] == [4.0] * 6 + [8.0] * 6
    assert body["by_flavour"]["local/small"]["memory_mb"][-2] == 8192
    bad = root.get("/api/admin/usage?span=year")
    assert bad.status_code == 400 and bad.get_json()["field"] == "span"


def _password(services: Services, who: str) -> None:
    from werkzeug.security import generate_password_hash

    from visa.users.models import User

    with services.database.unit_of_work() as s:
        s.scalar(select(User).where(User.username == who)).password_hash = generate_password_hash(f"{who}-password")


def test_the_scheduler_runs_the_job(services: Services) -> None:
    from visa.scheduler.runner import Runner

    names = {j.name: j.seconds for j in Runner(services).jobs()}
    assert names["usage"] == services.settings.scheduler.usage_seconds
    assert Plan  # the models are loaded
