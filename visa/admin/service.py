"""The administration rules: views of everyone's instances, users and catalogue, and admin changes.

Functions take the actor first and start with ``require``; they flush, never commit. Catalogue
changes go through the same schemas and the same apply code as the catalogue files, so an
entry saved here is exactly what the same entry in a file would give.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.admin.clouds import CloudStatus, cloud_statuses
from visa.admin.schemas import AuditQuery, InstanceQuery, PlanIn, PlanPatch, UserQuery
from visa.audit.models import AuditEvent
from visa.audit.service import record
from visa.catalogue.apply import Diff, _apply_flavour, _apply_image, _cloud_ids
from visa.catalogue.loader import Catalogue, Sourced
from visa.catalogue.models import Flavour, Image, Plan
from visa.catalogue.schemas import FlavourLimitsSpec, FlavourSpec, GpuSpec, ImageSpec, LifetimeSpec
from visa.clock import Clock
from visa.clouds.models import Cloud
from visa.errors import Conflict, InvalidInput, NotFound
from visa.instances import service as instances
from visa.instances.models import (
    CommandAction,
    ExtensionState,
    Instance,
    InstanceCommand,
    InstanceState,
)
from visa.policy import require
from visa.services import Services
from visa.users.models import RoleGrant, User

# Machines that hold cloud resources (a stopped machine keeps its disk, not its cores).
RUNNING_STATES = frozenset(set(InstanceState) - {InstanceState.STOPPED, InstanceState.DELETED, InstanceState.ERROR})
ACTIVE_SESSION_WINDOW = timedelta(minutes=5)
MAX_LIFETIME_CHANGE = timedelta(days=366)


def _page(session: Session, query: Select[Any], page: int, per_page: int) -> tuple[list[Any], int]:
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    items = list(session.scalars(query.limit(per_page).offset((page - 1) * per_page)).unique())
    return items, int(total)


# --- instances --------------------------------------------------------------------------------


def list_instances(actor: Actor, session: Session, q: InstanceQuery) -> tuple[list[Instance], int]:
    """Everyone's instances, filtered, sorted and one page at a time (relations loaded eagerly)."""
    require(actor, "view_all_instances")
    query = select(Instance)
    if not q.deleted:
        query = query.where(Instance.deleted_at.is_(None))
    if q.state:
        query = query.where(Instance.state.in_(q.state))
    if q.owner:
        query = query.where(Instance.owner_id.in_(select(User.id).where(User.username == q.owner)))
    if q.image or q.flavour:
        plans = select(Plan.id)
        if q.image:
            plans = plans.where(Plan.image_id.in_(select(Image.id).where(Image.name == q.image)))
        if q.flavour:
            plans = plans.where(Plan.flavour_id.in_(select(Flavour.id).where(Flavour.name == q.flavour)))
        query = query.where(Instance.plan_id.in_(plans))
    if q.cloud:
        query = query.where(Instance.cloud_id.in_(select(Cloud.id).where(Cloud.name == q.cloud)))
    if q.q:
        like = f"%{_escape_like(q.q)}%"
        query = query.where(or_(Instance.name.ilike(like, escape="\\"), Instance.uid.ilike(like, escape="\\")))
    key = q.sort.lstrip("-")
    if key == "owner":
        column: Any = select(User.username).where(User.id == Instance.owner_id).scalar_subquery()
    else:
        column = getattr(Instance, key)
    order = column.desc() if q.sort.startswith("-") else column.asc()
    tie = Instance.id.desc() if q.sort.startswith("-") else Instance.id.asc()
    # Two steps: pick the page's ids on the narrow table, then load those rows with their
    # relations. Sorting the eager-loading join instead costs ~5x on 100,000 instances.
    ids_query = query.with_only_columns(Instance.id).order_by(order, tie)
    total = session.scalar(query.with_only_columns(func.count(Instance.id)).order_by(None)) or 0
    ids = list(session.scalars(ids_query.limit(q.per_page).offset((q.page - 1) * q.per_page)))
    if not ids:
        return [], int(total)
    rows = {i.id: i for i in session.scalars(select(Instance).where(Instance.id.in_(ids))).unique()}
    return [rows[i] for i in ids if i in rows], int(total)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def get_instance(actor: Actor, session: Session, uid: str, *, deleted: bool = True) -> Instance:
    require(actor, "view_all_instances")
    query = select(Instance).where(Instance.uid == uid)
    if not deleted:
        query = query.where(Instance.deleted_at.is_(None))
    instance = session.scalar(query)
    if instance is None:
        raise NotFound("no such instance", field="uid")
    return instance


def instance_commands(actor: Actor, session: Session, instance: Instance, limit: int = 50) -> list[tuple[InstanceCommand, str | None]]:
    require(actor, "view_all_instances")
    rows = session.execute(
        select(InstanceCommand, User.username)
        .outerjoin(User, User.id == InstanceCommand.actor_id)
        .where(InstanceCommand.instance_id == instance.id)
        .order_by(InstanceCommand.id.desc())
        .limit(limit)
    ).all()
    return [(cmd, name) for cmd, name in rows]


def instance_history(actor: Actor, session: Session, instance: Instance, limit: int = 50) -> list[AuditEvent]:
    require(actor, "view_audit")
    return list(
        session.scalars(
            select(AuditEvent)
            .where(AuditEvent.target_type == "instance", AuditEvent.target_id == instance.uid)
            .order_by(AuditEvent.id.desc())
            .limit(limit)
        )
    )


def act_on_instance(actor: Actor, session: Session, clock: Clock, uid: str, action: CommandAction) -> Instance:
    """Reboot, stop, start or delete anyone's instance (the instance rules still apply)."""
    instance = get_instance(actor, session, uid, deleted=False)
    instances.request_action(actor, session, clock, instance, action)
    return instance


def change_termination(
    actor: Actor, session: Session, clock: Clock, uid: str, terminates_at: datetime, reason: str = ""
) -> Instance:
    """Move an instance's termination date, earlier or later; audited with the old and new dates.

    Those who handle extension requests may set the date directly. A later date clears the
    lifetime warning already sent, so the owner is warned again before the new date.
    """
    require(actor, "handle_extensions")
    instance = get_instance(actor, session, uid, deleted=False)
    if terminates_at.tzinfo is None:
        raise InvalidInput("give the date with a time zone (e.g. 2026-05-01T12:00:00Z)", field="terminates_at")
    now = clock.now()
    if terminates_at <= now:
        raise InvalidInput("the termination date must be in the future", field="terminates_at")
    if terminates_at - now > MAX_LIFETIME_CHANGE:
        raise InvalidInput("the termination date must be within a year", field="terminates_at")
    old = instance.terminates_at
    instance.terminates_at = terminates_at
    if terminates_at > old:
        instance.lifetime_warned_at = None
    session.flush()
    record(actor, session, clock, "instance.termination", target_type="instance", target_id=instance.uid,
           old=old.isoformat(), new=terminates_at.isoformat(), reason=reason[:500])
    return instance


def render_userdata(actor: Actor, session: Session, clock: Clock, uid: str, *, audit: bool = True) -> str:
    """What the machine receives at boot, as rendered now, with its secrets masked.

    Reads through the API are audited; the instance page's preview is part of viewing it.
    """
    instance = get_instance(actor, session, uid)
    from visa.instances.spec import render_for_operator

    text = render_for_operator(session, instance.uid)
    if audit:
        record(actor, session, clock, "instance.userdata.view", target_type="instance", target_id=uid)
    return text


# --- dashboard --------------------------------------------------------------------------------


def _counts(session: Session, column: Any, *joins: Any) -> dict[str, int]:
    query = select(column, func.count(Instance.id)).select_from(Instance)
    for j in joins:
        query = query.join(*j) if isinstance(j, tuple) else query.join(j)
    query = query.where(Instance.deleted_at.is_(None)).group_by(column)
    return {str(getattr(k, "value", k)): int(n) for k, n in session.execute(query)}


def stats(actor: Actor, session: Session, clock: Clock, services: Services) -> dict[str, Any]:
    require(actor, "view_all_instances")
    from visa.instances.models import ExtensionRequest

    by_state = _counts(session, Instance.state)
    by_image = _counts(session, Image.name, (Plan, Plan.id == Instance.plan_id), (Image, Image.id == Plan.image_id))
    by_flavour = _counts(
        session, Flavour.name, (Plan, Plan.id == Instance.plan_id), (Flavour, Flavour.id == Plan.flavour_id)
    )
    by_cloud = _counts(session, Cloud.name, (Cloud, Cloud.id == Instance.cloud_id))
    since = clock.now() - ACTIVE_SESSION_WINDOW
    active = session.scalar(
        select(func.count(Instance.id)).where(
            Instance.deleted_at.is_(None),
            or_(Instance.last_interaction_at >= since, Instance.last_seen_at >= since),
            Instance.state.in_([InstanceState.ACTIVE, InstanceState.PARTIALLY_ACTIVE]),
        )
    ) or 0
    pending = session.scalar(
        select(func.count(ExtensionRequest.id)).where(ExtensionRequest.state == ExtensionState.PENDING)
    ) or 0
    return {
        "instances": sum(by_state.values()),
        "by_state": by_state,
        "by_image": by_image,
        "by_flavour": by_flavour,
        "by_cloud": by_cloud,
        "active_sessions": int(active),
        "users": int(session.scalar(select(func.count(User.id)).where(User.active.is_(True))) or 0),
        "pending_extensions": int(pending),
        "clouds": clouds(actor, session, services),
    }


def clouds(actor: Actor, session: Session, services: Services) -> list[dict[str, Any]]:
    """Each cloud with its quota (``Provider.limits``) and what visa's instances use of it."""
    require(actor, "view_all_instances")
    used: dict[str, dict[str, int]] = {}
    rows = session.execute(
        select(
            Cloud.name, func.count(Instance.id), func.coalesce(func.sum(Flavour.cores), 0),
            func.coalesce(func.sum(Flavour.memory_mb), 0), func.coalesce(func.sum(Flavour.gpu_count), 0),
        )
        .select_from(Instance)
        .join(Cloud, Cloud.id == Instance.cloud_id)
        .join(Plan, Plan.id == Instance.plan_id)
        .join(Flavour, Flavour.id == Plan.flavour_id)
        .where(Instance.deleted_at.is_(None), Instance.state.in_(RUNNING_STATES))
        .group_by(Cloud.name)
    )
    for name, n, cores, mem, gpus in rows:
        used[name] = {"instances": int(n), "cores": int(cores), "memory_mb": int(mem), "gpus": int(gpus)}
    return [_cloud_dict(c, used.get(c.name, {})) for c in cloud_statuses(services)]


def _cloud_dict(c: CloudStatus, used: dict[str, int]) -> dict[str, Any]:
    lim = c.limits
    return {
        "name": c.name, "kind": c.kind, "enabled": c.enabled, "status": c.status, "message": c.message,
        "isolated": c.isolated, "isolation": c.isolation,
        "usage": {
            "max_instances": lim.max_instances if lim else None,
            "max_cores": lim.max_cores if lim else None,
            "max_memory_mb": lim.max_memory_mb if lim else None,
            "cloud_used_instances": lim.used_instances if lim else None,
            "cloud_used_cores": lim.used_cores if lim else None,
            "cloud_used_memory_mb": lim.used_memory_mb if lim else None,
            "instances": used.get("instances", 0), "cores": used.get("cores", 0),
            "memory_mb": used.get("memory_mb", 0), "gpus": used.get("gpus", 0),
        },
    }


# --- users ------------------------------------------------------------------------------------


def list_users(actor: Actor, session: Session, clock: Clock, q: UserQuery) -> tuple[list[User], int, dict[int, int]]:
    """Users matching a search, a page at a time, with how many instances each has."""
    require(actor, "manage_users")
    query = select(User)
    if q.q:
        like = f"%{_escape_like(q.q)}%"
        query = query.where(or_(
            User.username.ilike(like, escape="\\"), User.full_name.ilike(like, escape="\\"),
            User.email.ilike(like, escape="\\"),
        ))
    if q.role:
        now = clock.now()
        query = query.where(User.id.in_(
            select(RoleGrant.user_id).where(
                RoleGrant.role == q.role, or_(RoleGrant.expires_at.is_(None), RoleGrant.expires_at > now)
            )
        ))
    users, total = _page(session, query.order_by(User.username), q.page, q.per_page)
    ids = [u.id for u in users]
    counts: dict[int, int] = {}
    if ids:
        counts = dict(session.execute(  # type: ignore[arg-type]
            select(Instance.owner_id, func.count(Instance.id))
            .where(Instance.owner_id.in_(ids), Instance.deleted_at.is_(None))
            .group_by(Instance.owner_id)
        ).all())
        # One query for every listed user's grants rather than one per user.
        from sqlalchemy.orm import selectinload

        session.scalars(select(User).where(User.id.in_(ids)).options(selectinload(User.grants))).all()
    return users, total, counts


def get_user(actor: Actor, session: Session, username: str) -> tuple[User, int]:
    """A user and how many instances they have."""
    require(actor, "manage_users")
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user {username[:40]!r}", field="username")
    return user, instances.active_instance_count(session, user)


# --- catalogue --------------------------------------------------------------------------------


def cloud_names(session: Session) -> dict[int, str]:
    return {c.id: c.name for c in session.scalars(select(Cloud))}


def flavour_spec(flavour: Flavour, clouds: dict[int, str]) -> FlavourSpec:
    """A stored flavour as a catalogue entry (what its file would say)."""
    return FlavourSpec(
        name=flavour.name, description=flavour.description or "", cores=flavour.cores,
        memory_gb=flavour.memory_mb / 1024,
        gpu=GpuSpec(kind=flavour.gpu_kind, count=flavour.gpu_count) if flavour.gpu_kind and flavour.gpu_count else None,
        cloud=clouds.get(flavour.cloud_id) if flavour.cloud_id else None, cloud_flavour=flavour.cloud_flavour_ref, visible=flavour.visible,
        limits=FlavourLimitsSpec(
            roles=sorted({lim.role for lim in flavour.limits if lim.role is not None}),
            instruments=sorted({lim.instrument.name for lim in flavour.limits if lim.instrument is not None}),
        ),
        lifetimes=[LifetimeSpec(role=lt.role, hours=lt.lifetime_hours) for lt in flavour.lifetimes],
    )


def list_flavours(actor: Actor, session: Session) -> list[tuple[Flavour, FlavourSpec, int]]:
    require(actor, "manage_catalogue")
    clouds, counts = cloud_names(session), _instances_by(session, Plan.flavour_id)
    return [(f, flavour_spec(f, clouds), counts.get(f.id, 0)) for f in session.scalars(select(Flavour).order_by(Flavour.name))]


def _instances_by(session: Session, column: Any) -> dict[int, int]:
    rows = session.execute(
        select(column, func.count(Instance.id)).join(Plan, Plan.id == Instance.plan_id)
        .where(Instance.deleted_at.is_(None)).group_by(column)
    )
    return {int(k): int(n) for k, n in rows}


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
    clouds = _cloud_ids(session, Catalogue(flavours=[Sourced(spec, "api")], images=[]))
    diff = Diff()
    flavour = _apply_flavour(session, spec, existing, clouds, {}, diff)
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
    clouds = _cloud_ids(session, Catalogue(flavours=[], images=[Sourced(spec, "api")]))
    diff = Diff()
    image = _apply_image(session, spec, existing, clouds, diff)
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


# --- audit ------------------------------------------------------------------------------------


def audit_events(actor: Actor, session: Session, q: AuditQuery) -> tuple[list[AuditEvent], int]:
    require(actor, "view_audit")
    query = select(AuditEvent)
    if q.action:
        if q.action.endswith("."):
            query = query.where(AuditEvent.action.startswith(q.action, autoescape=True))
        else:
            query = query.where(AuditEvent.action == q.action)
    if q.actor:
        query = query.where(AuditEvent.actor_name == q.actor)
    if q.target_type:
        query = query.where(AuditEvent.target_type == q.target_type)
    if q.target_id:
        query = query.where(AuditEvent.target_id == q.target_id)
    for value, fieldname in ((q.since, "since"), (q.until, "until")):
        if value is not None and value.tzinfo is None:
            raise InvalidInput("give the time with a time zone", field=fieldname)
    if q.since:
        query = query.where(AuditEvent.at >= q.since)
    if q.until:
        query = query.where(AuditEvent.at < q.until)
    return _page(session, query.order_by(AuditEvent.id.desc()), q.page, q.per_page)

