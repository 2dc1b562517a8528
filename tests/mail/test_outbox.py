"""Emails once per event: retried when surely not sent, never sent twice."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from tests.processes import free_port
from tests.services import Inbox, add_instance
from visa.actor import SYSTEM
from visa.clock import FrozenClock
from visa.instances import lifecycle
from visa.instances.models import Instance
from visa.mail.models import SentEmail
from visa.mail.outbox import CLAIMED, deliver
from visa.services import Services


def _idle(services: Services, world, days: float = 3.5) -> int:
    with services.database.unit_of_work() as s:
        then = services.clock.now() - timedelta(days=days)
        return add_instance(s, services.clock, world, created_at=then, last_seen_at=then).id


def _deliver(services: Services):
    return deliver(services.database.sessionmaker, services.settings, services.clock)


def _rows(services: Services) -> list[SentEmail]:
    with services.database.sessionmaker() as s:
        return list(s.scalars(select(SentEmail).order_by(SentEmail.id)))


def test_smtp_down_then_back(services: Services, world, clock: FrozenClock, inbox: Inbox) -> None:
    real_port = services.settings.smtp.port
    services.settings.smtp.port = free_port()  # nothing listens there
    _idle(services, world)
    assert lifecycle.run(services).inactivity_warned
    [row] = _rows(services)
    assert row.sent_at is None and row.error.startswith("retry: cannot reach the SMTP server")
    assert _deliver(services).retry  # still down: kept for later
    services.settings.smtp.port = real_port
    assert len(_deliver(services).sent) == 1
    assert _deliver(services).sent == []
    assert len(inbox.wait_for(1)) == 1
    [row] = _rows(services)
    assert row.sent_at is not None and row.error is None


def test_crash_after_the_decision_sends_on_the_next_cycle(services: Services, world, clock: FrozenClock,
                                                          inbox: Inbox) -> None:
    _idle(services, world)
    # The process dies right after the commit: the after-commit delivery never runs.
    with services.database.unit_of_work() as s:
        lifecycle.cycle(SYSTEM, s, clock, services.settings)
        s.info.pop("after_commit")
    [row] = _rows(services)
    assert row.sent_at is None and row.error is None
    clock.advance(minutes=5)
    assert lifecycle.run(services).inactivity_warned == []  # the decision is not taken twice
    assert len(_deliver(services).sent) == 1
    assert _deliver(services).sent == []
    assert [m["X-Visa-Event"] for m in inbox.wait_for(2, timeout=1)] == [row.key]


def test_crash_between_claim_and_send_never_duplicates(services: Services, world, clock: FrozenClock,
                                                       inbox: Inbox) -> None:
    _idle(services, world)
    with services.database.unit_of_work() as s:
        lifecycle.cycle(SYSTEM, s, clock, services.settings)
        s.info.pop("after_commit")
        # Another process claimed it and died (or is sending it right now).
    with services.database.unit_of_work() as s:
        s.execute(update(SentEmail).values(error=CLAIMED))
    assert _deliver(services).sent == []
    assert inbox.wait_for(1, timeout=0.5) == []
    [row] = _rows(services)
    assert row.error == CLAIMED and row.sent_at is None  # visible to operators, at most once


def test_event_that_no_longer_applies_is_not_sent(services: Services, world, clock: FrozenClock,
                                                  inbox: Inbox) -> None:
    iid = _idle(services, world)
    with services.database.unit_of_work() as s:
        lifecycle.cycle(SYSTEM, s, clock, services.settings)
        s.info.pop("after_commit")
    with services.database.unit_of_work() as s:  # the owner came back before the email left
        s.execute(update(Instance).where(Instance.id == iid).values(last_interaction_at=clock.now()))
    assert lifecycle.run(services).cancelled == 1
    result = _deliver(services)
    assert result.sent == [] and len(result.obsolete) == 1
    assert inbox.wait_for(1, timeout=0.5) == []


def test_no_address_no_row(services: Services, world, clock: FrozenClock, inbox: Inbox) -> None:
    from visa.users.models import User

    with services.database.unit_of_work() as s:
        s.execute(update(User).values(email=None))
    _idle(services, world)
    assert lifecycle.run(services).inactivity_warned  # the decision stands
    assert _rows(services) == []
