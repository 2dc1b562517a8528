"""Which plans a user may pick, and how long their machines may live."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import time
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.audit.service import record
from visa.catalogue.apply import Diff, Progress, apply_catalogue, apply_flavour, apply_image, cloud_ids
from visa.catalogue.loader import Catalogue, Sourced, load
from visa.catalogue.models import Flavour, Image, Plan
from visa.catalogue.schemas import (
    FlavourLimitsSpec,
    FlavourSpec,
    GpuSpec,
    ImageSpec,
    LifetimeSpec,
    PlanIn,
    PlanPatch,
)
from visa.clock import Clock
from visa.clouds.service import cloud_names
from visa.errors import Conflict, InvalidInput, NotFound
from visa.experiments.models import Experiment
from visa.policy import allowed, require
from visa.settings import LifetimeSettings
from visa.users.models import STAFF_ROLES, Role


def flavour_allowed(flavour: Flavour, roles: Iterable[Role], experiments: Iterable[Experiment],
                    groups: Iterable[str] = ()) -> bool:
    """Open to all without limits; with limits, a listed role or user group, or an experiment on a
    listed instrument."""
    if not flavour.limits and not flavour.limit_groups:
        return True
    if set(groups) & set(flavour.limit_groups):
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
    groups = actor.user.group_names() if actor.user is not None else frozenset()
    return [p for p in plans if flavour_allowed(p.flavour, actor.roles, experiments, groups)]


def offered_plans(actor: Actor, session: Session, experiment_ids: Iterable[int]) -> list[Plan]:
    """The plans this actor may pick for the experiments named by id; experiments they do not belong to
    count for nothing (admins excepted)."""
    ids = list(experiment_ids)
    experiments = list(session.scalars(select(Experiment).where(Experiment.id.in_(ids)))) if ids else []
    if not allowed(actor, "experiments.use_any"):
        experiments = [e for e in experiments if actor.id in {m.id for m in e.members}]
    return plans_for(actor, session, experiments)


def _default_lifetime(role: Role | None, defaults: LifetimeSettings) -> int:
    return defaults.staff_max_hours if role in STAFF_ROLES else defaults.user_max_hours


def max_lifetime_hours(flavour: Flavour, roles: Iterable[Role], defaults: LifetimeSettings,
                       groups: Iterable[str] = ()) -> int:
    """The maximum of the rules that apply to the owner.

    Every user is subject to the rule for everyone (a flavour's role-less lifetime, else the
    user default); each role they hold adds its own rule (the flavour's lifetime for that
    role, else the default for that role), and each of their user groups the flavour's
    lifetime for that group, if it has one. The longest wins.
    """
    per_role = {lt.role: lt.lifetime_hours for lt in flavour.lifetimes}
    candidates = [per_role.get(None, defaults.user_max_hours)]
    for role in roles:
        candidates.append(per_role.get(role, _default_lifetime(role, defaults)))
    candidates += [hours for group, hours in (flavour.group_lifetimes or {}).items() if group in set(groups)]
    return max(candidates)


def inactivity_limit_hours(roles: Iterable[Role], defaults: LifetimeSettings, flavour: Flavour | None = None) -> int:
    """Hours idle before deletion: the owner's limit, shortened by the flavour's ``idle_warning_hours``
    (warned then, deleted ``inactivity_warning_hours`` later)."""
    limit = defaults.staff_inactivity_hours if set(roles) & STAFF_ROLES else defaults.user_inactivity_hours
    if flavour is not None and flavour.idle_warning_hours is not None:
        limit = min(limit, flavour.idle_warning_hours + defaults.inactivity_warning_hours)
    return limit


def apply_files(
    actor: Actor, session: Session, clock: Clock, paths: list[Path], *, progress: Progress | None = None
) -> Diff:
    """Validate the files and apply them (the caller's transaction decides dry run or not)."""
    known = frozenset(session.scalars(select(Flavour.name)))
    return apply_catalogue(actor, session, clock, load(paths, known_flavours=known), progress=progress)


# --- editing the catalogue through the API (validated and applied as the files are) ------------------


def flavour_spec(flavour: Flavour, clouds: dict[int, str]) -> FlavourSpec:
    """A stored flavour as a catalogue entry (what its file would say)."""
    return FlavourSpec(
        name=flavour.name, description=flavour.description or "", cores=flavour.cores,
        memory_gb=flavour.memory_mb / 1024,
        gpu=GpuSpec(kind=flavour.gpu_kind, count=flavour.gpu_count) if flavour.gpu_kind and flavour.gpu_count else None,
        cloud=clouds.get(flavour.cloud_id) if flavour.cloud_id else None, cloud_flavour=flavour.cloud_flavour_ref, visible=flavour.visible,
        limits=FlavourLimitsSpec(
            roles=sorted({lim.role for lim in flavour.limits if lim.role is not None}),
            groups=list(flavour.limit_groups or []),
            instruments=sorted({lim.instrument.name for lim in flavour.limits if lim.instrument is not None}),
        ),
        lifetimes=[LifetimeSpec(role=lt.role, group=None, hours=lt.lifetime_hours) for lt in flavour.lifetimes]
        + [LifetimeSpec(role=None, group=g, hours=h) for g, h in sorted((flavour.group_lifetimes or {}).items())],
        idle_warning_hours=flavour.idle_warning_hours,
    )


def list_flavours(actor: Actor, session: Session) -> list[tuple[Flavour, FlavourSpec]]:
    require(actor, "manage_catalogue")
    clouds = cloud_names(session)
    return [(f, flavour_spec(f, clouds)) for f in session.scalars(select(Flavour).order_by(Flavour.name))]


def _to_save(session: Session, model: type[Flavour] | type[Image], what: str, spec_name: str,
             url_name: str | None, *, create: bool) -> Any:
    """The catalogue entry a save replaces (None when creating), after the checks both kinds share.

    ``what`` names the kind with its article ("a flavour", "an image").
    """
    kind = what.split(" ", 1)[1]
    if url_name is not None and url_name != spec_name:
        raise InvalidInput(f"{what} cannot be renamed: the name in the body must match the URL", field="name")
    existing = session.scalar(select(model).where(model.name == spec_name))
    if create and existing is not None:
        raise Conflict(f"{kind} {spec_name!r} already exists", field="name")
    if not create and existing is None:
        raise NotFound(f"no {kind} {spec_name!r}", field="name")
    return existing


def get_flavour(actor: Actor, session: Session, name: str) -> Flavour:
    require(actor, "manage_catalogue")
    flavour = session.scalar(select(Flavour).where(Flavour.name == name))
    if flavour is None:
        raise NotFound(f"no flavour {name[:64]!r}", field="name")
    return flavour


def save_flavour(actor: Actor, session: Session, clock: Clock, spec: FlavourSpec, *, name: str | None = None,
                 create: bool = False) -> tuple[Flavour, Diff]:
    """Create or replace a flavour from a catalogue entry, validated and applied like the files."""
    require(actor, "manage_catalogue")
    existing = _to_save(session, Flavour, "a flavour", spec.name, name, create=create)
    clouds = cloud_ids(session, Catalogue(flavours=[Sourced(spec, "api")], images=[]))
    diff = Diff()
    flavour = apply_flavour(session, spec, existing, clouds, {}, diff)
    session.flush()
    if diff:
        record(actor, session, clock, "catalogue.flavour.save", target_type="flavour", target_id=spec.name,
               changes=diff.changes[:100])
    return flavour, diff


def set_flavour_limits(actor: Actor, session: Session, clock: Clock, name: str, limits: FlavourLimitsSpec) -> Flavour:
    spec = flavour_spec(get_flavour(actor, session, name), cloud_names(session))
    new = FlavourSpec.model_validate({**spec.model_dump(), "limits": limits.model_dump()})
    return save_flavour(actor, session, clock, new, name=name)[0]


def set_flavour_lifetimes(actor: Actor, session: Session, clock: Clock, name: str, lifetimes: list[LifetimeSpec]) -> Flavour:
    spec = flavour_spec(get_flavour(actor, session, name), cloud_names(session))
    new = FlavourSpec.model_validate({**spec.model_dump(), "lifetimes": [lt.model_dump() for lt in lifetimes]})
    return save_flavour(actor, session, clock, new, name=name)[0]


def hide_flavour(actor: Actor, session: Session, clock: Clock, name: str) -> Flavour:
    """Flavours are hidden, never deleted: instances still refer to them."""
    flavour = get_flavour(actor, session, name)
    if flavour.visible:
        flavour.visible = False
        record(actor, session, clock, "catalogue.flavour.hide", target_type="flavour", target_id=name)
    return flavour


def list_images(actor: Actor, session: Session) -> list[Image]:
    require(actor, "manage_catalogue")
    return list(session.scalars(select(Image).order_by(Image.name)))


def get_image(actor: Actor, session: Session, name: str) -> Image:
    require(actor, "manage_catalogue")
    image = session.scalar(select(Image).where(Image.name == name))
    if image is None:
        raise NotFound(f"no image {name[:64]!r}", field="name")
    return image


def save_image(actor: Actor, session: Session, clock: Clock, spec: ImageSpec, *, name: str | None = None,
               create: bool = False) -> tuple[Image, Diff]:
    """Create or replace an image; its ``plans`` (when given) become the image's plans, as in the files."""
    require(actor, "manage_catalogue")
    existing = _to_save(session, Image, "an image", spec.name, name, create=create)
    flavours = {f.name: f for f in session.scalars(select(Flavour).where(Flavour.name.in_([p.flavour for p in spec.plans])))}
    unknown = [p.flavour for p in spec.plans if p.flavour not in flavours]
    if unknown:
        raise InvalidInput(f"plans: unknown flavour(s) {unknown}", field="plans")
    clouds = cloud_ids(session, Catalogue(flavours=[], images=[Sourced(spec, "api")]))
    diff = Diff()
    image = apply_image(session, spec, existing, clouds, diff)
    session.flush()
    if spec.plans or existing is not None:
        have = {p.flavour.name: p for p in session.scalars(select(Plan).where(Plan.image_id == image.id))}
        for ps in spec.plans:
            plan = have.get(ps.flavour)
            if plan is None:
                plan = Plan(image=image, flavour=flavours[ps.flavour], preset=False, enabled=ps.enabled)
                session.add(plan)
                diff.add(f"+ plan {spec.name}/{ps.flavour}")
            plan.enabled = ps.enabled
            if ps.preset:
                _make_preset(session, plan)
            elif plan.preset:
                plan.preset = False
        named = {p.flavour for p in spec.plans}
        for fname, plan in have.items():
            if fname not in named and plan.enabled:
                plan.enabled, plan.preset = False, False
                diff.add(f"- plan {spec.name}/{fname} (disabled)")
    session.flush()
    if diff:
        record(actor, session, clock, "catalogue.image.save", target_type="image", target_id=spec.name,
               changes=diff.changes[:100])
    return image, diff


def hide_image(actor: Actor, session: Session, clock: Clock, name: str) -> Image:
    image = get_image(actor, session, name)
    if image.visible:
        image.visible = False
        record(actor, session, clock, "catalogue.image.hide", target_type="image", target_id=name)
    return image


def list_plans(actor: Actor, session: Session) -> list[Plan]:
    require(actor, "manage_catalogue")
    return list(session.scalars(select(Plan).join(Plan.image).join(Plan.flavour).order_by(Image.name, Flavour.cores, Flavour.name)))


def _make_preset(session: Session, plan: Plan) -> None:
    # One preset in the whole catalogue, as with the files.
    for other in session.scalars(select(Plan).where(Plan.preset.is_(True))):
        if other is not plan:
            other.preset = False
    plan.preset = True


def create_plan(actor: Actor, session: Session, clock: Clock, data: PlanIn) -> Plan:
    require(actor, "manage_catalogue")
    image = get_image(actor, session, data.image)
    flavour = get_flavour(actor, session, data.flavour)
    plan = session.scalar(select(Plan).where(Plan.image_id == image.id, Plan.flavour_id == flavour.id))
    if plan is not None:
        raise Conflict(f"plan {data.image}/{data.flavour} already exists (id {plan.id})", field="flavour")
    plan = Plan(image=image, flavour=flavour, preset=False, enabled=data.enabled)
    session.add(plan)
    session.flush()
    if data.preset:
        _make_preset(session, plan)
    record(actor, session, clock, "catalogue.plan.create", target_type="plan", target_id=plan.id,
           image=image.name, flavour=flavour.name, preset=data.preset, enabled=data.enabled)
    return plan


def get_plan(actor: Actor, session: Session, plan_id: int) -> Plan:
    require(actor, "manage_catalogue")
    plan = session.get(Plan, plan_id)
    if plan is None:
        raise NotFound("no such plan", field="id")
    return plan


def update_plan(actor: Actor, session: Session, clock: Clock, plan_id: int, data: PlanPatch) -> Plan:
    plan = get_plan(actor, session, plan_id)
    if data.enabled is not None:
        plan.enabled = data.enabled
        if not data.enabled:
            plan.preset = False
    if data.preset is True:
        if not plan.enabled:
            raise InvalidInput("a disabled plan cannot be the preset", field="preset")
        _make_preset(session, plan)
    elif data.preset is False:
        plan.preset = False
    session.flush()
    record(actor, session, clock, "catalogue.plan.update", target_type="plan", target_id=plan.id,
           **data.model_dump(exclude_none=True))
    return plan


def disable_plan(actor: Actor, session: Session, clock: Clock, plan_id: int) -> Plan:
    """Plans are disabled, never deleted: instances still refer to them."""
    return update_plan(actor, session, clock, plan_id, PlanPatch(enabled=False))


def warm_wanted(plan: Plan, local_time: time) -> int:
    """How many machines of this plan are kept warm at ``local_time`` (the site's clock): the
    largest count of the plan's windows that hold then; a window past midnight wraps."""
    at = local_time.strftime("%H:%M")
    counts = [0]
    for window in plan.warm or []:
        start, end, count = str(window.get("from")), str(window.get("to")), int(window.get("count") or 0)
        inside = start <= at < end if start <= end else (at >= start or at < end)
        if inside:
            counts.append(count)
    return max(counts)
