"""A GPU pool of 4 ``CUSTOM_GPU_A40`` for the bookings' service and API tests, a real SMTP server
(tests/services.py), and the people of a beamtime on id16a."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest

from tests.clouds.doubles import InMemoryCloud
from tests.factories import make_cloud, make_experiment, make_flavour, make_image, make_plan, make_user
from tests.services import inbox, sched_settings, smtp_server  # noqa: F401 (fixtures)
from visa.clock import FrozenClock
from visa.clouds.base import MEMORY_MB, VCPU, Capacity, HostCapacity, Pool
from visa.clouds.service import clear_cache
from visa.db import Database
from visa.experiments.models import Instrument
from visa.services import Services
from visa.settings import Settings
from visa.users.models import Role

GPU_CLASS = "CUSTOM_GPU_A40"
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
TODAY = NOW.date()
BEAMTIME = date(2026, 3, 3)  # carol's and dave's experiment: 3 to 6 March on id16a


class GpuCloud(InMemoryCloud):
    """Placement's view of one GPU host. A double because no GPU runs here; the calendar reads
    only what ``Provider.capacity`` and ``needs`` answer, which the OpenStack sandbox's browser
    test (tests/bookings/test_browser.py) reads from a real Placement."""

    def __init__(self, gpus: int = 4) -> None:
        super().__init__([], "gpu")
        self.gpus, self.used = gpus, 0

    def capacity(self) -> Capacity:
        return Capacity((HostCapacity("gpu-1", {GPU_CLASS: Pool(self.gpus, self.used), VCPU: Pool(1024, 0),
                                                MEMORY_MB: Pool(10**7, 0)}),))

    def needs(self, flavour_ref: str, cores: int, memory_mb: int) -> dict[str, int]:
        gpu = {GPU_CLASS: 1} if flavour_ref.startswith("esrf.gpu") else {}
        return {VCPU: cores, MEMORY_MB: memory_mb, **gpu}


def mail_sent() -> None:
    """Emails go in background threads after the commit: let them finish (on SQLite, a sender's
    write and the test's next one would otherwise meet)."""
    for thread in threading.enumerate():
        if thread.name == "visa-mail":
            thread.join(timeout=15)


@pytest.fixture(autouse=True)
def _mail_sent() -> Iterator[None]:
    """... and before the database is emptied for the next test."""
    yield
    mail_sent()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def gpus() -> GpuCloud:
    return GpuCloud()


@pytest.fixture
def host(sched_settings: Settings, db: Database, clock: FrozenClock,  # noqa: F811 (the fixture above)
         gpus: GpuCloud) -> Iterator[Any]:
    clear_cache()  # capacity answers are cached for a few seconds per Services
    svc = Services(settings=sched_settings, database=db, clock=clock)
    svc.set_provider("gpu", gpus)
    yield svc
    clear_cache()


@pytest.fixture
def world(db: Database, clock: FrozenClock) -> dict[str, Any]:
    """The GPU size (a week's life) and a CPU size on the cloud "gpu"; alice, bob, carol and dave
    (users), ada (admin), sid (id16a's scientist), ivy (id19's scientist)."""
    with db.unit_of_work() as s:
        cloud = make_cloud(s, clock, "gpu", kind="fake")
        image = make_image(s, "desktop")
        gpu = make_flavour(s, "esrf.gpu.a40", 16, 32768, gpu="NVIDIA A40", lifetimes={None: 168})
        cpu = make_flavour(s, "esrf.medium")
        for f in (gpu, cpu):
            f.cloud_id = cloud.id
        gpu_plan, cpu_plan = make_plan(s, image, gpu), make_plan(s, image, cpu, preset=True)
        people = {name: make_user(s, clock, name, email=f"{name}@example.org", password=f"{name}-password",
                                  quota=3, roles=roles)
                  for name, roles in (("alice", ()), ("bob", ()), ("carol", ()), ("dave", ()),
                                      ("ada", (Role.ADMIN,)), ("sid", (Role.INSTRUMENT_SCIENTIST,)),
                                      ("ivy", (Role.INSTRUMENT_SCIENTIST,)))}
        beam = make_experiment(s, members=[people["carol"], people["dave"]], instrument="id16a", proposal="ev900",
                               start=BEAMTIME)
        bob_beam = make_experiment(s, members=[people["bob"], people["alice"]], instrument="id16a", start=BEAMTIME)
        other = make_experiment(s, members=[people["dave"]], instrument="id19", start=BEAMTIME)
        s.flush()
        s.get(Instrument, beam.instrument_id).scientists.append(people["sid"])  # type: ignore[union-attr]
        s.get(Instrument, other.instrument_id).scientists.append(people["ivy"])  # type: ignore[union-attr]
        return {"cloud": cloud.id, "gpu_plan": gpu_plan.id, "cpu_plan": cpu_plan.id, "beam": beam.id,
                "bob_beam": bob_beam.id, "other": other.id, **{n: u.id for n, u in people.items()}}
