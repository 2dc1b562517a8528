"""The rules of GPU bookings: who may ask for one and for which days, who decides, and whether the
units are there over the calendar.

The calendar of a cloud's GPU pools counts, day by day (UTC): what Placement says the pool has
(``Provider.capacity``), less the accepted bookings that cover the day, less visa's machines that
still live that day (until their ``terminates_at``; a machine made from a booking counts in its
booking, not again), less what the cloud holds now that visa's machines do not explain (another
project's servers), taken as held on every day. Only an accepted booking holds units: accepting
re-checks the calendar with the cloud's row locked, so two deciders cannot give away one unit
twice. A machine made outside a booking may not take, over its whole life, a unit booked for
someone else; one made from its owner's booking lives no longer than it.

Functions take the actor first, then the session and a clock; they flush and never commit; the
emails leave after the commit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.audit.service import record
from visa.bookings import emails
from visa.bookings.models import Booking, BookingState, booking_instances
from visa.bookings.schemas import DecideBooking, RequestBooking
from visa.catalogue.capacity import flavour_cloud
from visa.catalogue.models import Flavour, Plan
from visa.catalogue.service import max_lifetime_hours, plans_for
from visa.clock import Clock
from visa.clouds.base import is_gpu_class
from visa.clouds.models import Cloud
from visa.clouds.service import CloudHost, cloud_capacity
from visa.errors import Conflict, InvalidInput, NoCapacity, NotFound
from visa.experiments.models import Experiment, Proposal
from visa.instances import service as instances
from visa.instances.models import Instance
from visa.instances.schemas import CreateInstance
from visa.instances.service import Allowance
from visa.mail.outbox import enqueue, enqueue_many
from visa.policy import allowed, require
from visa.settings import Settings
from visa.states import InstanceState
from visa.users.models import Role
from visa.users.service import holders_of

DAY = timedelta(days=1)
GONE = (InstanceState.DELETING, InstanceState.DELETED)


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def booking_end(booking: Booking) -> datetime:
    """The moment its last day ends: its machines are deleted then."""
    return day_start(booking.ends_on + DAY)


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


# --- the calendar -----------------------------------------------------------------------------


def gpu_needs(host: CloudHost, cloud: Cloud, flavour: Flavour) -> dict[str, int] | None:
    """The GPU units one machine of the flavour takes on its cloud (resource class -> units); None
    when the cloud cannot say."""
    try:
        needs = host.provider(cloud.name).needs(flavour.cloud_flavour_ref, flavour.cores, flavour.memory_mb)
    except Exception:  # an unknown flavour or a cloud that does not answer: cannot say
        return None
    return {rc: n for rc, n in needs.items() if is_gpu_class(rc) and n > 0}


@dataclass
class Calendar:
    """A cloud's GPU pools over days: each class's units, and how many are held on each day."""

    totals: dict[str, int]
    held: dict[date, Counter[str]]

    def free(self, day: date, rc: str) -> int:
        return self.totals.get(rc, 0) - self.held.get(day, Counter())[rc]

    def full_day(self, needs: dict[str, int], count: int, span: Iterable[date]) -> tuple[date, str] | None:
        """The first day of ``span`` that has no room for ``count`` machines taking ``needs``."""
        for day in span:
            for rc, n in sorted(needs.items()):
                if self.free(day, rc) < n * count:
                    return day, rc
        return None

    def next_free(self, needs: dict[str, int], first: date, length: int, horizon: int) -> date | None:
        """The first day from ``first`` on which one machine can start and run ``length`` days."""
        for offset in range(horizon + 1):
            start = first + timedelta(days=offset)
            if self.full_day(needs, 1, days(start, start + timedelta(days=length - 1))) is None:
                return start
        return None


def calendar(session: Session, host: CloudHost, cloud: Cloud, first: date, last: date, now: datetime, *,
             exclude: int | None = None) -> Calendar | None:
    """The cloud's GPU pools from ``first`` to ``last``; None when the cloud cannot say what it has.
    ``exclude``: a booking left out (the one being decided)."""
    answer = cloud_capacity(host, cloud.name)
    if answer.capacity is None:
        return None
    pools = {rc: pool for rc, pool in answer.capacity.totals().items() if is_gpu_class(rc)}
    held: dict[date, Counter[str]] = {d: Counter() for d in days(first, last)}
    needs_of: dict[int, dict[str, int]] = {}

    def needs(flavour: Flavour) -> dict[str, int]:
        if flavour.id not in needs_of:
            needs_of[flavour.id] = gpu_needs(host, cloud, flavour) or {}
        return needs_of[flavour.id]

    accepted = select(Booking).where(
        Booking.cloud_id == cloud.id, Booking.state == BookingState.ACCEPTED,
        Booking.starts_on <= last, Booking.ends_on >= first)
    if exclude is not None:
        accepted = accepted.where(Booking.id != exclude)
    for booking in session.scalars(accepted).all():
        for day in days(max(first, booking.starts_on), min(last, booking.ends_on)):
            for rc, n in needs(booking.flavour).items():
                held[day][rc] += n * booking.count
    # visa's machines: those made from a booking count in it; the others until their end.
    booked = select(booking_instances.c.instance_id)
    rows = session.execute(
        select(Instance.terminates_at, Plan.flavour_id, Instance.id.in_(booked))
        .join(Plan, Plan.id == Instance.plan_id)
        .where(Instance.cloud_id == cloud.id, Instance.deleted_at.is_(None), Instance.state.not_in(GONE))
    ).all()
    flavours = {f.id: f for f in session.scalars(select(Flavour).where(Flavour.id.in_({r[1] for r in rows})))}
    now_held: Counter[str] = Counter()
    for terminates_at, flavour_id, from_booking in rows:
        taken = needs(flavours[flavour_id])
        now_held.update(taken)
        if from_booking:
            continue
        for day in held:
            if day_start(day) < terminates_at:
                for rc, n in taken.items():
                    held[day][rc] += n
    # What the cloud holds now beyond visa's machines stays held (visa cannot know until when).
    for rc, pool in pools.items():
        other = max(0, pool.used - now_held[rc])
        if other:
            for day in held:
                held[day][rc] += other
    return Calendar({rc: pool.total for rc, pool in pools.items()}, held)


def _full_message(cal: Calendar, flavour: Flavour, needs: dict[str, int], count: int, day: date, rc: str) -> str:
    free = max(0, cal.free(day, rc))
    return (f"{flavour.name} is fully booked on {day.isoformat()}: {free} of {cal.totals.get(rc, 0)} {rc} free, "
            f"{needs[rc] * count} needed")


# --- asking -----------------------------------------------------------------------------------


def _beamtimes(actor: Actor, session: Session, data: RequestBooking) -> tuple[Experiment | None, Proposal | None,
                                                                              list[Experiment]]:
    """The experiment or the proposal the booking serves, and its experiments the actor may book for."""
    if (data.experiment_id is None) == (data.proposal is None):
        raise InvalidInput("name the experiment (experiment_id) or the proposal (proposal) the booking serves",
                           field="experiment_id")
    any_experiment = allowed(actor, "experiments.use_any")
    if data.experiment_id is not None:
        experiment = session.get(Experiment, data.experiment_id)
        if experiment is None or not (any_experiment or actor.id in {m.id for m in experiment.members}):
            raise InvalidInput(f"unknown experiment {data.experiment_id}", field="experiment_id")
        return experiment, None, [experiment]
    proposal = session.scalar(select(Proposal).where(Proposal.identifier == data.proposal))
    mine = [] if proposal is None else [
        e for e in session.scalars(select(Experiment).where(Experiment.proposal_id == proposal.id))
        if any_experiment or actor.id in {m.id for m in e.members}]
    if proposal is None or not mine:
        # Same answer for a proposal that exists but is not one's own: others' proposals stay unnamed.
        raise InvalidInput(f"unknown proposal {(data.proposal or '')[:64]!r}", field="proposal")
    return None, proposal, mine


def _check_days(data: RequestBooking, beamtimes: list[Experiment], today: date, settings: Settings) -> None:
    b = settings.bookings
    if data.ends_on < data.starts_on:
        raise InvalidInput("the last day comes before the first", field="ends_on")
    if data.starts_on < today:
        raise InvalidInput(f"the first day has passed (today is {today.isoformat()}, UTC)", field="starts_on")
    if (data.ends_on - data.starts_on).days + 1 > b.max_days:
        raise InvalidInput(f"a booking covers at most {b.max_days} days", field="ends_on")
    if data.ends_on > today + timedelta(days=b.horizon_days):
        raise InvalidInput(f"bookings reach at most {b.horizon_days} days ahead", field="ends_on")
    margin = timedelta(days=b.beamtime_margin_days)
    earliest = min(e.start_date for e in beamtimes) - margin
    latest = max(e.end_date for e in beamtimes) + margin
    if data.starts_on < earliest:
        raise InvalidInput(f"the beamtime allows bookings from {earliest.isoformat()}", field="starts_on")
    if data.ends_on > latest:
        raise InvalidInput(f"the beamtime allows bookings until {latest.isoformat()}", field="ends_on")


def _bookable(actor: Actor, session: Session, settings: Settings, host: CloudHost, name: str,
              beamtimes: list[Experiment]) -> tuple[Flavour, Cloud, dict[str, int]]:
    flavour = session.scalar(select(Flavour).where(Flavour.name == name, Flavour.visible.is_(True)))
    if flavour is None:
        raise InvalidInput(f"no size {name[:64]!r}", field="flavour")
    if not any(p.flavour_id == flavour.id for p in plans_for(actor, session, beamtimes)):
        raise InvalidInput(f"{flavour.name} is not available to you for this beamtime", field="flavour")
    cloud = flavour_cloud(session, settings, flavour)
    if cloud is None or not cloud.enabled:
        raise Conflict(f"the cloud of {flavour.name} is not configured or disabled", field="flavour")
    needs = gpu_needs(host, cloud, flavour)
    if needs is None:
        raise Conflict(f"cloud {cloud.name!r} cannot say what {flavour.name} takes now: try again later",
                       field="flavour")
    if not needs:
        raise InvalidInput(f"{flavour.name} has no GPU: only GPU sizes are booked", field="flavour")
    return flavour, cloud, needs


def _check_room(session: Session, host: CloudHost, cloud: Cloud, flavour: Flavour, needs: dict[str, int],
                count: int, first: date, last: date, now: datetime, *, exclude: int | None = None) -> None:
    cal = calendar(session, host, cloud, first, last, now, exclude=exclude)
    if cal is None:
        raise Conflict(f"cloud {cloud.name!r} cannot say what it has now: try again later", field="flavour")
    full = cal.full_day(needs, count, days(first, last))
    if full is not None:
        day, rc = full
        raise NoCapacity(_full_message(cal, flavour, needs, count, day, rc), field="starts_on",
                         day=day.isoformat(), resource_class=rc)


def request_booking(actor: Actor, session: Session, clock: Clock, settings: Settings, host: CloudHost,
                    data: RequestBooking) -> Booking:
    """Ask for ``count`` GPU machines on days of one's beamtime; refused at once, naming the day,
    when the calendar has no room for them. The deciders are told by email."""
    require(actor, "booking.request")
    now = clock.now()
    experiment, proposal, beamtimes = _beamtimes(actor, session, data)
    _check_days(data, beamtimes, now.date(), settings)
    flavour, cloud, needs = _bookable(actor, session, settings, host, data.flavour, beamtimes)
    _check_room(session, host, cloud, flavour, needs, data.count, data.starts_on, data.ends_on, now)
    assert actor.user is not None
    booking = Booking(
        user_id=actor.user.id, flavour_id=flavour.id, cloud_id=cloud.id, count=data.count,
        experiment_id=experiment.id if experiment else None, proposal_id=proposal.id if proposal else None,
        starts_on=data.starts_on, ends_on=data.ends_on, comment=data.comment, state=BookingState.PENDING,
        response="", created_at=now,
    )
    session.add(booking)
    session.flush()
    record(actor, session, clock, "booking.request", target_type="booking", target_id=str(booking.id),
           flavour=flavour.name, count=data.count, starts_on=data.starts_on.isoformat(),
           ends_on=data.ends_on.isoformat())
    deciders = {u.id: u for u in holders_of(session, Role.ADMIN, now)}
    scientists = {s.id for i in booking.instruments for s in i.scientists}
    for user in holders_of(session, Role.INSTRUMENT_SCIENTIST, now):
        if user.id in scientists:
            deciders[user.id] = user
    deciders.pop(actor.user.id, None)
    enqueue_many(session, clock, settings, [(emails.BOOKING_REQUESTED, booking.id, str(u)) for u in sorted(deciders)])
    return booking


# --- reading ----------------------------------------------------------------------------------


def get_booking(actor: Actor, session: Session, booking_id: int) -> Booking:
    booking = session.get(Booking, booking_id)
    if booking is None or not allowed(actor, "booking.view", booking):
        raise NotFound("no such booking", field="booking_id")
    return booking


def my_bookings(actor: Actor, session: Session) -> list[Booking]:
    if actor.user is None:
        return []
    return list(session.scalars(
        select(Booking).where(Booking.user_id == actor.user.id).order_by(Booking.starts_on.desc(), Booking.id.desc())))


def made_from(actor: Actor, session: Session, instance: Instance) -> Booking | None:
    """The booking a machine was made from, if any: the machine's page names it (its days, not its
    comment) to whoever may see the machine."""
    require(actor, "instance.view", instance)
    return session.scalar(select(Booking).join(booking_instances, booking_instances.c.booking_id == Booking.id)
                          .where(booking_instances.c.instance_id == instance.id))


def bookings_to_decide(actor: Actor, session: Session, *, pending_only: bool = False,
                       state: BookingState | None = None, user_id: int | None = None) -> list[Booking]:
    """What the actor decides on: every booking for an administrator, those of their instruments'
    beamtimes for an instrument scientist; pending ones first, then by first day. ``state`` and
    ``user_id`` narrow it to one state, one user's."""
    require(actor, "booking.list_all")
    query = select(Booking).order_by(Booking.starts_on, Booking.id)
    if pending_only:
        state = BookingState.PENDING
    if state is not None:
        query = query.where(Booking.state == state)
    if user_id is not None:
        query = query.where(Booking.user_id == user_id)
    found = [b for b in session.scalars(query) if allowed(actor, "booking.decide", b)]
    return sorted(found, key=lambda b: b.state != BookingState.PENDING)


def can_decide_some(actor: Actor) -> bool:
    return allowed(actor, "booking.list_all")


# --- deciding ---------------------------------------------------------------------------------


def _locked(actor: Actor, session: Session, booking_id: int) -> Booking:
    """The booking, with its cloud's row locked first: deciders on one cloud's pool take turns
    (PostgreSQL; SQLite has one writer at a time), so the calendar read after the lock is the
    one the decision is written into."""
    booking = get_booking(actor, session, booking_id)
    session.scalar(select(Cloud.id).where(Cloud.id == booking.cloud_id).with_for_update(key_share=True))
    fresh = session.scalar(select(Booking).where(Booking.id == booking_id).with_for_update(of=Booking)
                           .execution_options(populate_existing=True))
    assert fresh is not None
    return fresh


def accept_booking(actor: Actor, session: Session, clock: Clock, settings: Settings, host: CloudHost,
                   booking_id: int, data: DecideBooking) -> Booking:
    booking = _locked(actor, session, booking_id)
    require(actor, "booking.decide", booking)
    now = clock.now()
    if booking.state != BookingState.PENDING:
        raise Conflict(f"this booking has already been {booking.state.value.lower()}")
    if booking.ends_on < now.date():
        raise Conflict("the booking's days have passed")
    needs = gpu_needs(host, booking.cloud, booking.flavour)
    if needs is None:
        raise Conflict(f"cloud {booking.cloud.name!r} cannot say what {booking.flavour.name} takes now: try again later")
    _check_room(session, host, booking.cloud, booking.flavour, needs, booking.count,
                max(booking.starts_on, now.date()), booking.ends_on, now, exclude=booking.id)
    _decided(actor, session, clock, settings, booking, BookingState.ACCEPTED, data.response)
    return booking


def refuse_booking(actor: Actor, session: Session, clock: Clock, settings: Settings, booking_id: int,
                   data: DecideBooking) -> Booking:
    booking = _locked(actor, session, booking_id)
    require(actor, "booking.decide", booking)
    if booking.state != BookingState.PENDING:
        raise Conflict(f"this booking has already been {booking.state.value.lower()}")
    if not data.response:
        raise InvalidInput("say why the booking is refused", field="response")
    _decided(actor, session, clock, settings, booking, BookingState.REFUSED, data.response)
    return booking


def cancel_booking(actor: Actor, session: Session, clock: Clock, settings: Settings, booking_id: int) -> Booking:
    """The user (or an administrator) gives the units back; machines made from it keep their end."""
    booking = _locked(actor, session, booking_id)
    require(actor, "booking.cancel", booking)
    if booking.state not in (BookingState.PENDING, BookingState.ACCEPTED):
        raise Conflict(f"this booking has already been {booking.state.value.lower()}")
    booking.state, booking.handled_at = BookingState.CANCELLED, clock.now()
    session.flush()
    record(actor, session, clock, "booking.cancel", target_type="booking", target_id=str(booking.id))
    return booking


def _decided(actor: Actor, session: Session, clock: Clock, settings: Settings, booking: Booking,
             state: BookingState, response: str) -> None:
    booking.state, booking.response = state, response
    booking.handled_by_id, booking.handled_at = actor.id, clock.now()
    session.flush()
    record(actor, session, clock, f"booking.{'accept' if state == BookingState.ACCEPTED else 'refuse'}",
           target_type="booking", target_id=str(booking.id))
    enqueue(session, clock, settings, emails.BOOKING_DECIDED, booking.id, state.value)


# --- machines and bookings --------------------------------------------------------------------


def _own_booking(actor: Actor, session: Session, cloud: Cloud, flavour: Flavour, today: date) -> Booking | None:
    """The actor's accepted booking of this size that covers today and has a machine left."""
    if actor.user is None:
        return None
    used = (select(func.count()).select_from(booking_instances)
            .join(Instance, Instance.id == booking_instances.c.instance_id)
            .where(booking_instances.c.booking_id == Booking.id, Instance.deleted_at.is_(None),
                   Instance.state.not_in(GONE))
            .scalar_subquery())
    return session.scalar(
        select(Booking).where(
            Booking.user_id == actor.user.id, Booking.cloud_id == cloud.id, Booking.flavour_id == flavour.id,
            Booking.state == BookingState.ACCEPTED, Booking.starts_on <= today, Booking.ends_on >= today,
            used < Booking.count)
        .order_by(Booking.ends_on.desc(), Booking.id))


@dataclass(frozen=True)
class Availability:
    """One size for one user now, bookings considered: ``available`` as ``Room`` says it, and the
    first day one of its machines could start when there is none now."""

    available: bool | None
    message: str
    next_free: date | None = None
    booking: Booking | None = None


def availability(actor: Actor, session: Session, clock: Clock, settings: Settings, host: CloudHost,
                 cloud: Cloud, flavour: Flavour, terminates_at: datetime) -> Availability:
    """Whether a machine of ``flavour`` ending at ``terminates_at`` may be made now for the actor:
    from their own booking (then it ends with it), or from units nobody booked over its life."""
    now = clock.now()
    today = now.date()
    needs = gpu_needs(host, cloud, flavour)
    if not needs:
        return Availability(None if needs is None else True, "")
    own = _own_booking(actor, session, cloud, flavour, today)
    if own is not None:
        return Availability(True, f"booked for you until {own.ends_on.isoformat()}", booking=own)
    last = (terminates_at - timedelta(microseconds=1)).date()
    b = settings.bookings
    length = (last - today).days + 1
    cal = calendar(session, host, cloud, today, today + timedelta(days=b.horizon_days + length), now)
    if cal is None:
        return Availability(None, "cannot say")
    full = cal.full_day(needs, 1, days(today, last))
    if full is None:
        return Availability(True, "")
    day, rc = full
    nxt = cal.next_free(needs, today + DAY, length, b.horizon_days)
    message = _full_message(cal, flavour, needs, 1, day, rc)
    message += f"; next free on {nxt.isoformat()}" if nxt else f"; none free within {b.horizon_days} days"
    return Availability(False, message, nxt)


def longest_life(actor: Actor, session: Session, clock: Clock, settings: Settings, flavour: Flavour) -> datetime:
    """When a machine of this size made now for the actor would end, at the longest."""
    groups = actor.user.group_names() if actor.user is not None else frozenset()
    return clock.now() + timedelta(hours=max_lifetime_hours(flavour, actor.roles, settings.lifetimes, groups))


def create_instance(actor: Actor, session: Session, clock: Clock, settings: Settings, host: CloudHost,
                    data: CreateInstance) -> Instance:
    """``instances.service.create_instance`` with the bookings' say: a GPU machine comes from the
    owner's accepted booking for today when they have one (even when the pool is full for
    others) and ends with it; else it may not take, during its life, units booked for others."""
    made_from: list[Booking] = []

    def check(cloud: Cloud, flavour: Flavour, terminates_at: datetime) -> Allowance:
        said = availability(actor, session, clock, settings, host, cloud, flavour, terminates_at)
        if said.booking is not None:
            made_from.append(said.booking)
            return Allowance(until=booking_end(said.booking))
        return Allowance(refusal=said.message if said.available is False else None)

    instance = instances.create_instance(actor, session, clock, settings, data, capacity=host, allowance=check)
    if made_from:
        session.execute(insert(booking_instances).values(booking_id=made_from[0].id, instance_id=instance.id))
        record(actor, session, clock, "booking.use", target_type="booking", target_id=str(made_from[0].id),
               instance=instance.uid)
    return instance
