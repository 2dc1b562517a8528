"""Warnings and deletions on a controllable clock, with emails received by a real SMTP server."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import REGISTRY
from sqlalchemy import func, select, update

from tests.factories import actor, make_experiment, make_flavour, make_plan
from tests.services import Inbox, add_instance
from visa.catalogue.models import Image
from visa.clock import FrozenClock
from visa.commands.executor import run_pending_commands
from visa.instances import lifecycle, service
from visa.instances.activity import Observation, record
from visa.instances.models import CommandAction, Instance, InstanceCommand, InstanceState
from visa.instances.schemas import CreateInstance
from visa.mail.models import SentEmail
from visa.services import Services
from visa.users.models import Role, User


def _instance(services: Services, instance_id: int) -> Instance:
    with services.database.sessionmaker() as s:
        inst = s.get(Instance, instance_id)
        assert inst is not None
        return inst


def _new(services: Services, world: dict[str, int], owner: str = "alice", **fields) -> int:
    with services.database.unit_of_work() as s:
        return add_instance(s, services.clock, world, owner, **fields).id  # type: ignore[arg-type]


def _run_until(services: Services, clock: FrozenClock, until: timedelta, step: timedelta) -> list[tuple]:
    """Run a cycle every ``step`` until ``until`` from now; what happened, with when."""
    events = []
    end = clock.now() + until
    while clock.now() < end:
        clock.advance(seconds=step.total_seconds())
        r = lifecycle.run(services)
        for i in r.lifetime_warned:
            events.append(("lifetime_warned", i, clock.now()))
        for i in r.inactivity_warned:
            events.append(("inactivity_warned", i, clock.now()))
        for i, why in r.deleted.items():
            events.append((f"deleted:{why}", i, clock.now()))
    return events


STEP = timedelta(minutes=5)


def test_idle_instance_is_warned_then_deleted_on_time(services: Services, world, clock: FrozenClock,
                                                      inbox: Inbox) -> None:
    start = clock.now()
    iid = _new(services, world)
    reaped = {a: REGISTRY.get_sample_value("visa_reaper_actions_total", {"action": a, "reason": "inactivity"}) or 0
              for a in ("warn", "delete")}
    events = _run_until(services, clock, timedelta(days=2, hours=23), timedelta(hours=1))
    events += _run_until(services, clock, timedelta(days=1, hours=2), STEP)
    kinds = [(k, i) for k, i, _ in events]
    assert kinds == [("inactivity_warned", iid), ("deleted:inactivity", iid)]
    warned_at, deleted_at = events[0][2], events[1][2]
    # 4 days of inactivity for a user, warned 24 h before, deleted on time (within one cycle).
    assert start + timedelta(days=3) <= warned_at < start + timedelta(days=3) + STEP
    assert start + timedelta(days=4) <= deleted_at < start + timedelta(days=4) + 2 * STEP
    inst = _instance(services, iid)
    assert inst.state == InstanceState.DELETING
    for action in ("warn", "delete"):  # each decision counted once, for the operators' dashboards
        assert REGISTRY.get_sample_value(
            "visa_reaper_actions_total", {"action": action, "reason": "inactivity"}) == reaped[action] + 1
    messages = inbox.wait_for(2)
    assert sorted(m["X-Visa-Event"].split(":")[0] for m in messages) == ["inactivity_warning", "instance_deleted"]
    warning = inbox.of_kind("inactivity_warning")[0]
    assert warning["To"] == "alice@example.org"
    assert "idle" in warning["Subject"]
    assert "http://visa.test/instances/" in warning.get_body(("plain",)).get_content()
    # The executor carries out the deletion: soft-deleted, history kept.
    assert run_pending_commands(services) == 1
    inst = _instance(services, iid)
    assert inst.state == InstanceState.DELETED and inst.deleted_at is not None
    with services.database.sessionmaker() as s:
        cmds = s.scalars(select(InstanceCommand).where(InstanceCommand.instance_id == iid)).all()
        assert [c.action for c in cmds] == [CommandAction.DELETE] and cmds[0].actor_id is None
        assert s.scalar(select(func.count(SentEmail.id))) == 2
        assert s.scalar(select(func.count(SentEmail.id)).where(SentEmail.sent_at.is_(None))) == 0
    # Further cycles change nothing and send nothing more.
    _run_until(services, clock, timedelta(hours=2), STEP)
    assert len(inbox.wait_for(3, timeout=0.3)) == 2


def test_computing_instance_is_not_deleted(services: Services, world, clock: FrozenClock, inbox: Inbox) -> None:
    iid = _new(services, world)
    for _ in range(10 * 24):  # ten days with the probe seeing a busy CPU every hour, no browser
        clock.advance(hours=1)
        record(services, [Observation(iid, cores=3.9, computing=True, last_input=None)])
        r = lifecycle.run(services)
        assert not r.inactivity_warned and not r.deleted
    assert _instance(services, iid).state == InstanceState.ACTIVE
    assert inbox.wait_for(1, timeout=0.3) == []


def test_activity_after_the_warning_cancels_it(services: Services, world, clock: FrozenClock,
                                               inbox: Inbox) -> None:
    iid = _new(services, world)
    events = _run_until(services, clock, timedelta(days=3, minutes=10), timedelta(minutes=10))
    assert [k for k, *_ in events] == ["inactivity_warned"]
    # The owner comes back (the gateway records input).
    with services.database.unit_of_work() as s:
        s.execute(update(Instance).where(Instance.id == iid).values(last_interaction_at=clock.now(),
                                                                   last_seen_at=clock.now()))
    r = lifecycle.run(services)
    assert r.cancelled == 1
    assert _instance(services, iid).inactivity_warned_at is None
    # Past the old deadline: still alive; warned again only 3 days after the new activity.
    events = _run_until(services, clock, timedelta(days=2), timedelta(minutes=30))
    assert events == []
    events = _run_until(services, clock, timedelta(days=2), timedelta(minutes=30))
    assert [k for k, *_ in events] == ["inactivity_warned", "deleted:inactivity"]
    keys = inbox.wait_for(3)
    assert [m["X-Visa-Event"].split(":")[0] for m in keys].count("inactivity_warning") == 2


def test_untouched_tab_does_not_keep_an_instance_alive(services: Services, world, clock: FrozenClock,
                                                       inbox: Inbox) -> None:
    start = clock.now()
    iid = _new(services, world, last_interaction_at=start)
    deleted_at = None
    while deleted_at is None and clock.now() < start + timedelta(days=6):
        clock.advance(minutes=30)
        with services.database.unit_of_work() as s:  # the tab stays open: traffic, no input
            s.execute(update(Instance).where(Instance.id == iid).values(last_seen_at=clock.now()))
        if lifecycle.run(services).deleted:
            deleted_at = clock.now()
    # Counted active for 6 h after the last input, then 4 days idle.
    assert deleted_at is not None
    assert start + timedelta(days=4, hours=6) <= deleted_at <= start + timedelta(days=4, hours=7)


def test_staff_get_longer_inactivity(services: Services, world, clock: FrozenClock, inbox: Inbox) -> None:
    start = clock.now()
    user_i = _new(services, world, "alice")
    staff_i = _new(services, world, "sam")
    events = _run_until(services, clock, timedelta(days=8, hours=1), timedelta(minutes=30))
    when = {(k, i): t for k, i, t in events}
    assert when[("deleted:inactivity", user_i)] - start < timedelta(days=4, hours=1)
    assert start + timedelta(days=7) <= when[("inactivity_warned", staff_i)] <= start + timedelta(days=7, hours=1)
    assert start + timedelta(days=8) <= when[("deleted:inactivity", staff_i)] <= start + timedelta(days=8, hours=1)


def test_lifetime_with_flavour_and_role_overrides(services: Services, world, clock: FrozenClock,
                                                  inbox: Inbox) -> None:
    """Lifetimes set at creation by the service: the longest rule for the owner's roles wins."""
    with services.database.unit_of_work() as s:
        image = s.get(Image, 1) or s.scalars(select(Image)).first()
        fl = make_flavour(s, "gpu", lifetimes={None: 72, Role.STAFF: 24 * 20})
        plan = make_plan(s, image, fl)
        alice, sam = s.get(User, world["alice"]), s.get(User, world["sam"])
        exp = make_experiment(s, members=[alice, sam])
        ids = {}
        for who in (alice, sam):
            inst = service.create_instance(actor(who, clock), s, clock, services.settings,
                                           CreateInstance(name="big", plan_id=plan.id, experiment_ids=[exp.id]))
            ids[who.username] = inst.id
        # Keep them busy so only the lifetime rule applies.
        s.execute(update(Instance).values(last_compute_at=clock.now() + timedelta(days=30)))
    start = clock.now()
    events = _run_until(services, clock, timedelta(days=21), timedelta(hours=1))
    when = {(k, i): t for k, i, t in events}
    # alice: the flavour's 72 h, warned 48 h before.
    assert when[("lifetime_warned", ids["alice"])] == start + timedelta(hours=24)
    assert when[("deleted:lifetime", ids["alice"])] == start + timedelta(hours=72)
    # sam (staff): the flavour's 20 days for staff beats its 72 h for everyone.
    assert when[("lifetime_warned", ids["sam"])] == start + timedelta(days=18)
    assert when[("deleted:lifetime", ids["sam"])] == start + timedelta(days=20)
    subjects = [m["Subject"] for m in inbox.wait_for(4)]
    assert sum("will be deleted" in s for s in subjects) == 2
