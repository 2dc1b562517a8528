"""``visa bookings`` on SQLite and PostgreSQL: an operator lists bookings (by state, by user),
accepts one (the calendar read again: a full day refuses it, naming the day) or refuses one with
a reason; the user's email has left when the command returns. Bad arguments: one error line
naming the argument, exit status 2; what the service refuses: its message, exit status 1."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.bookings.conftest import GpuCloud
from visa.bookings.models import Booking, BookingState
from visa.db import Database

pytestmark = pytest.mark.usefixtures("committed_db")  # the commands open connections of their own
TOMORROW = datetime.now(UTC).date() + timedelta(days=1)


@pytest.fixture
def booked(db: Database, world: dict[str, Any], cli: Any, gpus: GpuCloud, smtp_server: tuple[Any, int],
           monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Three waiting bookings for tomorrow (the commands read the real clock): carol's (1 GPU),
    dave's (all 4) and bob's; the command line's SMTP server is the test's."""
    from visa.services import Services

    for key, value in (("ENABLED", "true"), ("HOST", "127.0.0.1"), ("PORT", str(smtp_server[1])),
                       ("SENDER", "visa@visa.test")):
        monkeypatch.setenv(f"VISA_SMTP__{key}", value)
    # The GPU host's Placement, as the service tests have it: no GPU cloud runs here.
    real = Services.provider
    monkeypatch.setattr(Services, "provider", lambda self, name: gpus if name == "gpu" else real(self, name))
    made: dict[str, int] = {}
    with db.unit_of_work() as s:
        for user, count in (("carol", 1), ("dave", 4), ("bob", 1)):
            booking = Booking(user_id=world[user], flavour_id=_gpu_flavour(s), cloud_id=world["cloud"], count=count,
                              experiment_id=world["beam"], starts_on=TOMORROW, ends_on=TOMORROW,
                              state=BookingState.PENDING, created_at=datetime.now(UTC))
            s.add(booking)
            s.flush()
            made[user] = booking.id
    return made


def _gpu_flavour(s: Any) -> int:
    from sqlalchemy import select

    from visa.catalogue.models import Flavour

    found = s.scalar(select(Flavour.id).where(Flavour.name == "esrf.gpu.a40"))
    assert found is not None
    return int(found)


def test_list_accept_and_refuse(cli: Any, booked: dict[str, int], inbox: Any) -> None:
    listed = json.loads(cli("bookings", "list", "--json").stdout)
    assert [(b["id"], b["state"]) for b in listed] == [(booked[u], "PENDING") for u in ("carol", "dave", "bob")]
    text = cli("bookings", "list", "--user", "carol")
    assert text.exit_code == 0 and len(text.stdout.splitlines()) == 1
    assert f"{booked['carol']}  PENDING" in text.stdout and "carol" in text.stdout and "esrf.gpu.a40" in text.stdout

    r = cli("bookings", "accept", str(booked["carol"]))
    assert r.exit_code == 0 and r.stdout.strip() == f"booking {booked['carol']}: ACCEPTED", r.output
    assert [m["To"] for m in inbox.of_kind("booking_decided")] == ["carol@example.org"]  # sent before the exit

    # All four GPUs for tomorrow no longer fit beside carol's: refused, naming the day.
    r = cli("bookings", "accept", str(booked["dave"]))
    assert r.exit_code == 1 and f"fully booked on {TOMORROW.isoformat()}" in r.output, r.output
    r = cli("bookings", "accept", str(booked["carol"]))
    assert r.exit_code == 1 and "already been accepted" in r.output

    r = cli("bookings", "refuse", str(booked["bob"]), "--reason", "the beamtime was moved", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["response"] == "the beamtime was moved", r.output
    assert sorted(m["To"] for m in inbox.of_kind("booking_decided")) == ["bob@example.org", "carol@example.org"]

    assert [b["user"] for b in json.loads(cli("bookings", "list", "--state", "pending", "--json").stdout)] == ["dave"]
    accepted = json.loads(cli("bookings", "list", "--state", "ACCEPTED", "--json").stdout)
    assert [(b["user"], b["handled_by"]) for b in accepted] == [("carol", None)]  # decided by the system
    assert cli("bookings", "list", "--state", "refused", "--user", "carol").stdout == ""


@pytest.mark.parametrize(("args", "named"), [
    (("list", "--state", "maybe"), "--state"),
    (("list", "--user", "nobody"), "--user"),
    (("accept", "first"), "ID"),
    (("accept", "0"), "ID"),
    (("accept", str(2**40)), "ID"),
    (("refuse", "1"), "--reason"),
    (("refuse", "1", "--reason", "   "), "--reason"),
    (("refuse", "1", "--reason", "x" * 2001), "--reason"),
    (("accept", "1", "--message", "x" * 2001), "--message"),
])
def test_bad_arguments_are_named_with_exit_status_2(cli: Any, booked: dict[str, int], args: tuple[str, ...],
                                                    named: str) -> None:
    r = cli("bookings", *args)
    assert r.exit_code == 2, r.output
    error = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and named in error[0], r.output


def test_an_unknown_booking_is_a_domain_error(cli: Any, booked: dict[str, int], db: Database) -> None:
    for command in (("accept", "999999"), ("refuse", "999999", "--reason", "no")):
        r = cli("bookings", *command)
        assert r.exit_code == 1 and r.output.strip() == "error: no such booking", r.output
    with db.sessionmaker() as s:
        assert {b.state for b in s.query(Booking)} == {BookingState.PENDING}
