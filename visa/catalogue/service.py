"""Which plans a user may pick, and how long their machines may live."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.catalogue.apply import Diff, apply_catalogue
from visa.catalogue.loader import load
from visa.catalogue.models import Flavour, Image, Plan
from visa.clock import Clock
from visa.experiments.models import Experiment
from visa.policy import allowed
from visa.settings import LifetimeSettings
from visa.users.models import STAFF_ROLES, Role


def flavour_allowed(flavour: Flavour, roles: Iterable[Role], experiments: Iterable[Experiment]) -> bool:
    """Open to all without limits; with limits, a listed role or an experiment on a listed instrument."""
    if not flavour.limits:
        return True
    roles = set(roles)
    instrument_ids = {e.instrument_id for e in experiments}
    return any(
        (lim.role is not None and lim.role in roles)
        or (lim.instrument_id is not None and lim.instrument_id in instrument_ids)
        for lim in flavour.limits
    )


def plans_for(actor: Actor, session: Session, experiments: Iterable[Experiment]) -> list[Plan]:
    """Enabled plans of visible images and flavours that this actor may use for these experiments.

    Admins see every enabled plan: they may need to reproduce what any user gets.
    """
    experiments = list(experiments)
    plans = session.scalars(
        select(Plan)
        .join(Plan.image)
        .join(Plan.flavour)
        .where(Plan.enabled.is_(True), Image.visible.is_(True), Flavour.visible.is_(True))
        .order_by(Image.environment, Flavour.cores, Flavour.memory_mb)
    ).all()
    if allowed(actor, "catalogue.all_plans"):
        return list(plans)
    return [p for p in plans if flavour_allowed(p.flavour, actor.roles, experiments)]


def _default_lifetime(role: Role | None, defaults: LifetimeSettings) -> int:
    return defaults.staff_max_hours if role in STAFF_ROLES else defaults.user_max_hours


def max_lifetime_hours(flavour: Flavour, roles: Iterable[Role], defaults: LifetimeSettings) -> int:
    """The maximum of the rules that apply to the owner.

    Every user is subject to the rule for everyone (a flavour's role-less lifetime, else the
    user default); each role they hold adds its own rule (the flavour's lifetime for that
    role, else the default for that role). The longest wins.
    """
    per_role = {lt.role: lt.lifetime_hours for lt in flavour.lifetimes}
    candidates = [per_role.get(None, defaults.user_max_hours)]
    for role in roles:
        candidates.append(per_role.get(role, _default_lifetime(role, defaults)))
    return max(candidates)


def inactivity_limit_hours(roles: Iterable[Role], defaults: LifetimeSettings) -> int:
    if set(roles) & STAFF_ROLES:
        return defaults.staff_inactivity_hours
    return defaults.user_inactivity_hours


def apply_files(
    actor: Actor, session: Session, clock: Clock, paths: list[Path]
) -> Diff:
    """Validate the files and apply them (the caller's transaction decides dry run or not)."""
    known = frozenset(session.scalars(select(Flavour.name)))
    return apply_catalogue(actor, session, clock, load(paths, known_flavours=known))
