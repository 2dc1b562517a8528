"""GPU bookings as services, on SQLite and PostgreSQL: the calendar over four GPUs (two held by
running machines, one booked for tomorrow), the over-booking refused naming its day, who decides,
a machine made from a booking (even when the pool is full for others) that ends with it, the next
free day for the others, the emails of both sides and the lifecycle's warning before the end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from tests.bookings.conftest import BEAMTIME, GPU_CLASS, TODAY, GpuCloud, mail_sent
from tests.factories import actor
from visa.audit.models import AuditEvent
from visa.bookings import service
from visa.bookings.models import Booking, BookingState, booking_instances
from visa.bookings.schemas import DecideBooking, RequestBooking
from visa.clock import FrozenClock
from visa.db import Database
from visa.errors import Forbidden, InvalidInput, NoCapacity, NotFound
from visa.instances import extensions, lifecycle
from visa.instances.models import Instance
from visa.instances.schemas import CreateInstance, RequestExtension
from visa.users.models import User

TOMORROW = TODAY + timedelta(days=1)


def _as(s: Any, clock: FrozenClock, name: str) -> Any:
    return actor(s.scalar(select(User).where(User.username == name)), clock)


def _ask(db: Database, host: Any, clock: FrozenClock, who: str, **fields: Any) -> Booking:
    values = {"flavour": "esrf.gpu.a40", "starts_on": TOMORROW, "ends_on": TOMORROW, **fields}
    with db.unit_of_work() as s:
        booking = service.request_booking(_as(s, clock, who), s, clock, host.settings, host,
                                          RequestBooking.model_validate(values))
        s.expunge(booking)
    mail_sent()
    return booking


def _accept(db: Database, host: Any, clock: FrozenClock, who: str, booking_id: int) -> None:
    with db.unit_of_work() as s:
        service.accept_booking(_as(s, clock, who), s, clock, host.settings, host, booking_id,
                               DecideBooking(response="enjoy"))
    mail_sent()


def _create(db: Database, host: Any, clock: FrozenClock, who: str, plan: int, experiment: int) -> str:
    with db.unit_of_work() as s:
        return service.create_instance(_as(s, clock, who), s, clock, host.settings, host,
                                       CreateInstance(name=f"{who}'s GPU", plan_id=plan,
                                                      experiment_ids=[experiment])).uid


def _two_running_and_one_booked(db: Database, host: Any, clock: FrozenClock, gpus: GpuCloud,
                                world: dict[str, Any]) -> int:
    """alice runs two GPU machines (a week each); bob's booking of one for tomorrow is accepted."""
    for _ in range(2):
        _create(db, host, clock, "alice", world["gpu_plan"], world["bob_beam"])
    gpus.used = 2  # Placement counts them once they are scheduled
    bob = _ask(db, host, clock, "bob", experiment_id=world["bob_beam"])
    _accept(db, host, clock, "ada", bob.id)
    return bob.id


# Emails leave in background threads after each commit, on connections of their own: committed data.
@pytest.mark.usefixtures("committed_db")
def test_the_calendar_books_uses_and_refuses(db: Database, host: Any, clock: FrozenClock, gpus: GpuCloud,
                                             world: dict[str, Any], inbox: Any) -> None:
    _two_running_and_one_booked(db, host, clock, gpus, world)

    # Two more for tomorrow would make five of four: refused at once, naming the day.
    with pytest.raises(NoCapacity) as full:
        _ask(db, host, clock, "carol", experiment_id=world["beam"], count=2)
    assert full.value.field == "starts_on" and full.value.details["day"] == TOMORROW.isoformat()
    assert f"fully booked on {TOMORROW.isoformat()}: 1 of 4 {GPU_CLASS} free, 2 needed" in full.value.message

    # One from today to tomorrow fits; id16a's scientist accepts it, id19's cannot even see it.
    carol = _ask(db, host, clock, "carol", experiment_id=world["beam"], starts_on=TODAY, comment="tomography")
    with db.unit_of_work() as s, pytest.raises(NotFound):
        service.accept_booking(_as(s, clock, "ivy"), s, clock, host.settings, host, carol.id, DecideBooking())
    with db.unit_of_work() as s, pytest.raises(Forbidden):
        service.accept_booking(_as(s, clock, "carol"), s, clock, host.settings, host, carol.id, DecideBooking())
    with db.unit_of_work() as s:
        assert [b.id for b in service.bookings_to_decide(_as(s, clock, "ivy"), s)] == []
        assert carol.id in [b.id for b in service.bookings_to_decide(_as(s, clock, "sid"), s, pending_only=True)]
    _accept(db, host, clock, "sid", carol.id)

    # Tomorrow is full now: dave's week-long machine cannot be had; the day after, it can.
    with db.unit_of_work() as s:
        dave = _as(s, clock, "dave")
        flavour = s.get(Booking, carol.id).flavour  # type: ignore[union-attr]
        cloud = s.get(Booking, carol.id).cloud  # type: ignore[union-attr]
        said = service.availability(dave, s, clock, host.settings, host, cloud, flavour,
                                    service.longest_life(dave, s, clock, host.settings, flavour))
    assert said.available is False and said.next_free == TODAY + timedelta(days=2), said
    assert f"fully booked on {TOMORROW.isoformat()}" in said.message
    assert f"next free on {(TODAY + timedelta(days=2)).isoformat()}" in said.message
    with pytest.raises(NoCapacity) as refused:
        _create(db, host, clock, "dave", world["gpu_plan"], world["beam"])
    assert refused.value.field == "plan_id" and TOMORROW.isoformat() in refused.value.message

    # carol's own booking gives her the GPU, for the booking's days only.
    uid = _create(db, host, clock, "carol", world["gpu_plan"], world["beam"])
    end = datetime.combine(TOMORROW + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    with db.sessionmaker() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == uid))
        assert inst is not None and inst.terminates_at == end and inst.booked_until == end
        assert s.scalar(select(booking_instances.c.booking_id).where(
            booking_instances.c.instance_id == inst.id)) == carol.id
        assert s.scalar(select(AuditEvent.action).where(AuditEvent.action == "booking.use")) == "booking.use"
    # Her booking is used up: a second machine is one more for a full tomorrow.
    with pytest.raises(NoCapacity):
        _create(db, host, clock, "carol", world["gpu_plan"], world["beam"])
    _create(db, host, clock, "carol", world["cpu_plan"], world["beam"])  # no GPU: bookings do not matter
    # It lives no longer than the booking.
    with db.unit_of_work() as s, pytest.raises(InvalidInput) as longer:
        owner = _as(s, clock, "carol")
        inst = s.scalar(select(Instance).where(Instance.uid == uid))
        extensions.request_extension(owner, s, clock, host.settings, inst,
                                     RequestExtension(requested_until=end + timedelta(days=1)))
    assert longer.value.field == "until" and "booking" in longer.value.message

    # Both sides were told: the deciders (the admin, id16a's scientist) of each booking, and bob
    # and carol of the answers.
    inbox.wait_for(6)
    assert sorted(m["To"] for m in inbox.of_kind("booking_requested")) == [
        "ada@example.org", "ada@example.org", "sid@example.org", "sid@example.org"]
    assert sorted(m["To"] for m in inbox.of_kind("booking_decided")) == ["bob@example.org", "carol@example.org"]
    carol_mail = next(m for m in inbox.of_kind("booking_decided") if m["To"] == "carol@example.org")
    assert "accepted" in carol_mail["Subject"] and "enjoy" in carol_mail.get_body(("plain",)).get_content()

    # The lifecycle warns before the booking ends, saying why it cannot be extended.
    clock.set(end - timedelta(hours=47))
    result = lifecycle.run(host)
    with db.sessionmaker() as s:
        assert s.scalar(select(Instance.id).where(Instance.uid == uid)) in result.lifetime_warned
    warning = inbox.wait_for_kind("lifetime_warning")
    assert len(warning) == 1 and warning[0]["To"] == "carol@example.org"
    assert "GPU booking, which ends then" in warning[0].get_body(("plain",)).get_content()


@pytest.mark.usefixtures("committed_db")
def test_refusing_needs_a_reason_and_tells_the_user(db: Database, host: Any, clock: FrozenClock,
                                                   world: dict[str, Any], inbox: Any) -> None:
    booking = _ask(db, host, clock, "dave", proposal="ev900", starts_on=BEAMTIME, ends_on=BEAMTIME + timedelta(days=3))
    with db.unit_of_work() as s, pytest.raises(InvalidInput) as bare:
        service.refuse_booking(_as(s, clock, "sid"), s, clock, host.settings, booking.id, DecideBooking())
    assert bare.value.field == "response"
    with db.unit_of_work() as s:
        service.refuse_booking(_as(s, clock, "sid"), s, clock, host.settings, booking.id,
                               DecideBooking(response="the pool is kept for tomography this week"))
    with db.sessionmaker() as s:
        assert s.get(Booking, booking.id).state == BookingState.REFUSED  # type: ignore[union-attr]
    mail = inbox.wait_for_kind("booking_decided")
    assert mail and mail[0]["To"] == "dave@example.org" and "refused" in mail[0]["Subject"]
    assert "kept for tomography" in mail[0].get_body(("plain",)).get_content()


BAD = [
    ({"ends_on": TOMORROW - timedelta(days=2)}, "ends_on", "before the first"),
    ({"starts_on": TODAY - timedelta(days=1)}, "starts_on", "has passed"),
    ({"ends_on": BEAMTIME + timedelta(days=20)}, "ends_on", "the beamtime allows bookings until 2026-03-13"),
    ({"starts_on": TODAY, "ends_on": TODAY + timedelta(days=40)}, "ends_on", "at most 31 days"),
    ({"experiment_id": None}, "experiment_id", "name the experiment"),
    ({"proposal": "ev900"}, "experiment_id", "name the experiment"),
    ({"experiment_id": "bob_beam"}, "experiment_id", "unknown experiment"),  # carol is no member of it
    ({"experiment_id": None, "proposal": "ev404"}, "proposal", "unknown proposal"),
    ({"flavour": "esrf.medium"}, "flavour", "only GPU sizes"),
    ({"flavour": "nope"}, "flavour", "no size"),
]


def test_bad_requests_name_the_field(db: Database, host: Any, clock: FrozenClock, world: dict[str, Any]) -> None:
    for fields, field, words in BAD:
        values = {"experiment_id": world["beam"], **fields}
        if values["experiment_id"] == "bob_beam":
            values["experiment_id"] = world["bob_beam"]
        with pytest.raises(InvalidInput) as bad:
            _ask(db, host, clock, "carol", **values)
        assert bad.value.field == field and words in bad.value.message, (fields, bad.value.message)
    with db.sessionmaker() as s:
        assert s.scalar(select(Booking.id)) is None  # nothing half-made
