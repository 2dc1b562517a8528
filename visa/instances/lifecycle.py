"""When instances are warned and deleted: the end of their lifetime, or too long idle.

Rules (hours from ``settings.lifetimes``):

* Lifetime: ``terminates_at`` is set at creation (the longest rule for the owner's roles
  and flavour, see ``catalogue.service.max_lifetime_hours``) and moved by accepted
  extensions. A warning goes out ``lifetime_warning_hours`` before; the instance is
  deleted once ``terminates_at`` has passed and a warning went out in an earlier cycle.
* Inactivity: the last activity is the latest of the last input (``last_interaction_at``,
  else the creation), the last computation seen by the probe (``last_compute_at``) and
  the last sign of an open tab (``last_seen_at``), an open tab counting only up to
  ``untouched_tab_hours`` after the last input. Past the limit (users / staff, by the
  owner's roles now) minus ``inactivity_warning_hours`` a warning goes out; new activity
  cancels it; deletion needs the limit passed *and* the warning sent at least
  ``inactivity_warning_hours`` ago, so a late warning still gives the full notice.
  A flavour may warn sooner (``idle_warning_hours``, for scarce sizes such as GPUs): its
  machines' limit is then the shorter of the owner's and that time plus the notice.

Every decision is one set-based statement over indexed or narrow columns, never a loop over
all instances in Python: finding who to warn among 100,000 instances is one UPDATE. The
warning columns make each decision once: the UPDATE that sets them is the guard, and the
email row written in the same transaction carries a unique key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, not_, or_, select, update
from sqlalchemy.orm import Session, selectinload

from visa.actor import SYSTEM, Actor
from visa.catalogue.models import Flavour, Plan
from visa.clock import Clock
from visa.instances import emails
from visa.instances.models import CommandAction, Instance, InstanceState
from visa.instances.service import request_action
from visa.mail.outbox import enqueue_many
from visa.metrics import REAPER_ACTIONS
from visa.services import Services
from visa.settings import LifetimeSettings, Settings
from visa.users.models import STAFF_ROLES, RoleGrant, User

log = logging.getLogger(__name__)

BATCH = 500  # decisions of one kind per cycle; the rest wait for the next cycle


@dataclass
class CycleResult:
    cancelled: int = 0
    inactivity_warned: list[int] = field(default_factory=list)
    lifetime_warned: list[int] = field(default_factory=list)
    deleted: dict[int, str] = field(default_factory=dict)  # instance id -> reason

    def __str__(self) -> str:
        return (f"{len(self.lifetime_warned)} lifetime and {len(self.inactivity_warned)} inactivity warnings, "
                f"{self.cancelled} cancelled, {len(self.deleted)} deletions")


# --- the rules as SQL ----------------------------------------------------------------------


def live() -> ColumnElement[bool]:
    return and_(Instance.deleted_at.is_(None), Instance.state.not_in([InstanceState.DELETING, InstanceState.DELETED]))


def owner_is_staff(now: datetime) -> ColumnElement[bool]:
    # Uncorrelated: both databases evaluate the (small) set of staff once, not once per instance.
    return Instance.owner_id.in_(
        select(RoleGrant.user_id).where(
            RoleGrant.role.in_(STAFF_ROLES), or_(RoleGrant.expires_at.is_(None), RoleGrant.expires_at > now)
        )
    )


def no_activity_since(t: datetime, untouched: timedelta) -> ColumnElement[bool]:
    """True when nothing counted as activity after ``t``.

    An open tab counts up to ``untouched`` after the last input: min(last_seen, input +
    untouched) <= t, written without arithmetic on columns so that it is portable.
    """
    interaction = func.coalesce(Instance.last_interaction_at, Instance.created_at)
    return and_(
        interaction <= t,
        or_(Instance.last_compute_at.is_(None), Instance.last_compute_at <= t),
        or_(Instance.last_seen_at.is_(None), Instance.last_seen_at <= t, interaction <= t - untouched),
    )


def idle_at(when: datetime, now: datetime, lt: LifetimeSettings,
            flavour_warnings: Sequence[int] = ()) -> ColumnElement[bool]:
    """True when, at ``when`` and with no new activity, the instance is past its inactivity limit.

    ``flavour_warnings``: the flavours' ``idle_warning_hours`` in use (few values: one condition
    each, over an uncorrelated set of plans, rather than arithmetic on columns).
    """
    untouched = timedelta(hours=lt.untouched_tab_hours)
    notice = timedelta(hours=lt.inactivity_warning_hours)
    staff = owner_is_staff(now)
    return or_(
        and_(staff, no_activity_since(when - timedelta(hours=lt.staff_inactivity_hours), untouched)),
        and_(not_(staff), no_activity_since(when - timedelta(hours=lt.user_inactivity_hours), untouched)),
        *(
            and_(Instance.plan_id.in_(select(Plan.id).join(Flavour, Flavour.id == Plan.flavour_id)
                                      .where(Flavour.idle_warning_hours == hours)),
                 no_activity_since(when - timedelta(hours=hours) - notice, untouched))
            for hours in flavour_warnings
        ),
    )


def flavour_warnings(session: Session) -> list[int]:
    """The distinct ``idle_warning_hours`` the flavours set."""
    found = session.scalars(select(Flavour.idle_warning_hours).distinct().where(Flavour.idle_warning_hours.is_not(None)))
    return sorted(hours for hours in found if hours is not None)


def last_activity(instance: Instance, lt: LifetimeSettings) -> datetime:
    """The same rule in Python, for one instance (emails, the API)."""
    return instance.last_activity_at(lt.untouched_tab_hours)


# --- one cycle -----------------------------------------------------------------------------


def _ids(session: Session, where: ColumnElement[bool], limit: int) -> list[int]:
    return list(session.scalars(select(Instance.id).where(where).order_by(Instance.id).limit(limit)))


def _load(session: Session, ids: list[int]) -> list[Instance]:
    if not ids:
        return []
    return list(session.scalars(
        select(Instance).where(Instance.id.in_(ids)).order_by(Instance.id)
        .options(selectinload(Instance.owner).selectinload(User.grants))  # roles, for the emails
        .execution_options(populate_existing=True)
    ).unique())


def _mark(session: Session, where: ColumnElement[bool], limit: int, **values: object) -> list[int]:
    """Set ``values`` on up to ``limit`` instances matching ``where``; the ids that changed.

    The condition is checked again by the UPDATE itself, so two processes (an old leader and
    a new one) cannot both take the same decision.
    """
    ids = _ids(session, where, limit)
    if not ids:
        return []
    changed = session.execute(
        update(Instance).where(Instance.id.in_(ids), where).values(**values).returning(Instance.id),
        execution_options={"synchronize_session": False},
    ).scalars().all()
    return sorted(changed)


def cycle(actor: Actor, session: Session, clock: Clock, settings: Settings, *, limit: int = BATCH,
          send: bool = True) -> CycleResult:
    """Cancel, delete and warn. Flushes; the caller commits (emails go after the commit)."""
    lt = settings.lifetimes
    now = clock.now()
    result = CycleResult()
    inactivity_notice = timedelta(hours=lt.inactivity_warning_hours)
    lifetime_notice = timedelta(hours=lt.lifetime_warning_hours)
    early = flavour_warnings(session)

    # New activity cancels an inactivity warning.
    cancelled = session.execute(
        update(Instance)
        .where(Instance.inactivity_warned_at.is_not(None), Instance.deleted_at.is_(None),
               not_(idle_at(now + inactivity_notice, now, lt, early)))
        .values(inactivity_warned_at=None),
        execution_options={"synchronize_session": False},
    )
    result.cancelled = int(cancelled.rowcount or 0)  # type: ignore[attr-defined]

    # Deletions: due, and warned in time.
    expired = and_(live(), Instance.terminates_at <= now, Instance.lifetime_warned_at.is_not(None),
                   Instance.lifetime_warned_at < now)
    idle = and_(live(), Instance.inactivity_warned_at.is_not(None),
                Instance.inactivity_warned_at <= now - inactivity_notice, idle_at(now, now, lt, early))
    for reason, where in (("lifetime", expired), ("inactivity", idle)):
        due = _ids(session, where, limit - len(result.deleted))
        for instance in _load(session, due):
            request_action(actor, session, clock, instance, CommandAction.DELETE)
            result.deleted[instance.id] = reason
            log.info("instance %s (%s) deleted: %s", instance.uid, instance.owner.username, reason)

    # Warnings.
    result.lifetime_warned = _mark(
        session, and_(live(), Instance.lifetime_warned_at.is_(None), Instance.terminates_at <= now + lifetime_notice),
        limit, lifetime_warned_at=now,
    )
    result.inactivity_warned = _mark(
        session, and_(live(), Instance.inactivity_warned_at.is_(None), idle_at(now + inactivity_notice, now, lt, early)),
        limit, inactivity_warned_at=now,
    )
    session.flush()
    # The UPDATEs bypassed the identity map: refresh, in one query, the instances emails speak of.
    # (Held in a variable: the identity map keeps only weak references.)
    loaded = _load(session, result.lifetime_warned + result.inactivity_warned + list(result.deleted))

    if send:
        stamp = now.isoformat()
        enqueue_many(session, clock, settings, [
            *((emails.LIFETIME_WARNING, i, stamp) for i in result.lifetime_warned),
            *((emails.INACTIVITY_WARNING, i, stamp) for i in result.inactivity_warned),
            *((emails.INSTANCE_DELETED, i, reason) for i, reason in result.deleted.items()),
        ], wait=True)
    del loaded
    return result


def run(services: Services, guard: Callable[[Session], None] | None = None) -> CycleResult:
    """The scheduler job: one cycle in one transaction, emails sent after the commit.

    ``guard`` (the leader lease's check) runs first in the same transaction.
    """
    with services.database.unit_of_work() as s:
        if guard is not None:
            guard(s)
        result = cycle(SYSTEM, s, services.clock, services.settings)
    _count(result)
    if result.deleted or result.lifetime_warned or result.inactivity_warned or result.cancelled:
        log.info("lifecycle: %s", result)
    return result


def _count(result: CycleResult) -> None:
    """The decisions of a committed cycle, for ``visa_reaper_actions_total``."""
    for reason in result.deleted.values():
        REAPER_ACTIONS.labels(action="delete", reason=reason).inc()
    for reason, warned in (("lifetime", result.lifetime_warned), ("inactivity", result.inactivity_warned)):
        if warned:
            REAPER_ACTIONS.labels(action="warn", reason=reason).inc(len(warned))
