"""Two administrators accept, at the same moment, two bookings that each fit the last GPU of a
day: one is accepted, the other refused naming the day. Each acceptance reads the calendar and
then writes; both reads must not see the same free unit (PostgreSQL, two connections)."""

from __future__ import annotations

import contextlib
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from tests.bookings.conftest import TODAY, GpuCloud
from tests.factories import actor
from visa.bookings import service
from visa.bookings.models import Booking, BookingState
from visa.bookings.schemas import DecideBooking, RequestBooking
from visa.clock import FrozenClock
from visa.db import Database
from visa.errors import NoCapacity
from visa.users.models import Role, User

DAY = TODAY + timedelta(days=1)


def _as(s: Any, clock: FrozenClock, name: str) -> Any:
    return actor(s.scalar(select(User).where(User.username == name)), clock)


@pytest.mark.timeout(60)
def test_two_acceptances_at_once_cannot_give_the_last_unit_twice(
        committed_db: Database, host: Any, clock: FrozenClock, gpus: GpuCloud, world: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    if committed_db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: no two transactions read the calendar at once")
    gpus.gpus = 1  # the day's last unit
    ids = []
    for who, experiment in (("carol", world["beam"]), ("bob", world["bob_beam"])):
        with committed_db.unit_of_work() as s:
            ids.append(service.request_booking(
                _as(s, clock, who), s, clock, host.settings, host,
                RequestBooking(flavour="esrf.gpu.a40", starts_on=DAY, ends_on=DAY, experiment_id=experiment)).id)
    with committed_db.unit_of_work() as s:  # a second administrator
        s.scalar(select(User).where(User.username == "sid")).grants[0].role = Role.ADMIN  # type: ignore[union-attr]

    # Both acceptances read the calendar, then wait for each other (a few seconds at most) before
    # writing: the moment a busy server gives them anyway. One that waits for the other's commit
    # before it reads never meets it here.
    both_read = threading.Barrier(2)
    read = service.calendar

    def read_then_wait(*args: Any, **kwargs: Any) -> Any:
        cal = read(*args, **kwargs)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_read.wait(timeout=3)
        return cal

    monkeypatch.setattr(service, "calendar", read_then_wait)
    outcomes: dict[str, object] = {}

    def accept(who: str, booking_id: int) -> None:
        try:
            with committed_db.unit_of_work() as s:
                service.accept_booking(_as(s, clock, who), s, clock, host.settings, host, booking_id, DecideBooking())
            outcomes[who] = "accepted"
        except Exception as exc:
            outcomes[who] = exc

    threads = [threading.Thread(target=accept, args=pair) for pair in (("ada", ids[0]), ("sid", ids[1]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(outcomes) == 2, outcomes
    assert list(outcomes.values()).count("accepted") == 1, outcomes
    refused = next(o for o in outcomes.values() if o != "accepted")
    assert isinstance(refused, NoCapacity) and refused.details["day"] == DAY.isoformat(), refused
    with committed_db.sessionmaker() as s:
        states = sorted(s.scalars(select(Booking.state)))
    assert states == [BookingState.ACCEPTED, BookingState.PENDING]
