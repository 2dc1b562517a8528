"""The rules of instances: who may create one, how long it lives, what may be done to it.

Functions take the actor first, then the session and a clock; they flush and never commit.
Cloud work is not done here: an action stores a command, which the executor carries out
after the transaction commits.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, defaultload, defer

from visa.actor import Actor
from visa.audit.service import record
from visa.catalogue.capacity import room_on
from visa.catalogue.models import Flavour, Image, Plan
from visa.catalogue.service import max_lifetime_hours, plans_for
from visa.clock import Clock
from visa.clouds.models import Cloud
from visa.clouds.service import CloudHost
from visa.errors import Conflict, Forbidden, InvalidInput, NoCapacity, NotFound, QuotaExceeded
from visa.experiments.models import Experiment
from visa.instances import warm
from visa.instances.attributes import attribute_filters
from visa.instances.models import (
    CommandAction,
    CommandState,
    ExtensionRequest,
    ExtensionState,
    Instance,
    InstanceAttribute,
    InstanceCommand,
    InstanceHome,
    InstanceMember,
    MemberRole,
)
from visa.instances.schemas import CreateInstance, EditInstance, InstanceQuery
from visa.paging import Total, count_upto, escape_like
from visa.policy import allowed, require
from visa.provisioning.mounts import identity_needed
from visa.provisioning.site import site_for_cloud
from visa.settings import PosixSettings, ProvisioningSettings, Settings
from visa.states import InstanceState
from visa.users.models import User


def _groups(actor: Actor) -> frozenset[str]:
    return actor.user.group_names() if actor.user is not None else frozenset()


# What each action needs the instance to be in.
ALLOWED_FROM: dict[CommandAction, frozenset[InstanceState]] = {
    CommandAction.START: frozenset({InstanceState.STOPPED}),
    CommandAction.STOP: frozenset(
        {InstanceState.ACTIVE, InstanceState.PARTIALLY_ACTIVE, InstanceState.STARTING, InstanceState.ERROR}
    ),
    CommandAction.REBOOT: frozenset(
        {InstanceState.ACTIVE, InstanceState.PARTIALLY_ACTIVE, InstanceState.STARTING, InstanceState.ERROR}
    ),
}


def active_instance_count(session: Session, user: User) -> int:
    return session.scalar(
        select(func.count(Instance.id)).where(Instance.owner_id == user.id, Instance.deleted_at.is_(None))
    ) or 0


def check_quota(session: Session, user: User) -> None:
    """Refuse one more machine past the owner's quota. The owner's row is locked until the commit
    (PostgreSQL; SQLite has one writer at a time), so two creates at once count one after the other.
    NO KEY UPDATE: rows that merely refer to the user (audit, sessions) are not held up."""
    locked = session.scalar(
        select(User.instance_quota).where(User.id == user.id).with_for_update(key_share=True)
    )
    quota = user.instance_quota if locked is None else locked
    if quota < 0:
        return
    count = active_instance_count(session, user)
    if count >= quota:
        raise QuotaExceeded(
            f"you have {count} instance(s) and your quota is {quota}: delete one first", quota=quota,
        )


def check_identity(owner: User, experiments: list[Experiment], site: ProvisioningSettings,
                   posix: PosixSettings) -> None:
    """Refuse a machine whose storage the owner could not use as themselves: their experiment
    data or home share on the facility's storage need their uid and gid."""
    own = [e for e in experiments if owner.id in {m.id for m in e.members}]
    if not identity_needed(site, posix.require_uid, data=bool(own)):
        return
    missing = [name for name, value in (("uid_number", owner.uid_number), ("gid_number", owner.gid_number))
               if value is None]
    if not missing:
        return
    needs = [f"the data of experiment {', '.join(e.external_id for e in own)}"] if own else []
    if site.home_mount_template:
        needs.append("your home share")
    raise Conflict(
        f"your account has no unix {' and '.join(missing)}, which {' and '.join(needs)} on the facility's "
        "storage need: ask the user office or an administrator to set them", field=missing[0], missing=missing,
    )


def _experiments_for(actor: Actor, session: Session, ids: list[int]) -> list[Experiment]:
    if not ids:
        return []
    found = {e.id: e for e in session.scalars(select(Experiment).where(Experiment.id.in_(ids)))}
    missing = [i for i in ids if i not in found]
    if missing:
        raise InvalidInput(f"unknown experiment(s): {missing}", field="experiment_ids")
    if not allowed(actor, "experiments.use_any"):
        uid = actor.id
        foreign = [e.external_id for e in found.values() if uid not in {m.id for m in e.members}]
        if foreign:
            # Same answer as for an unknown id: do not reveal others' experiments.
            raise InvalidInput(f"unknown experiment(s): {[i for i in ids if found[i].external_id in foreign]}",
                               field="experiment_ids")
    return [found[i] for i in dict.fromkeys(ids)]


def _open_data_for(
    actor: Actor, session: Session, ids: list[int], attached: list[Experiment], now: datetime
) -> list[Experiment]:
    """Experiments of any proposal whose embargo has ended at ``now``: anyone may ask for them.

    One already attached as the user's own experiment is left out: it is mounted as such.
    """
    attached_ids = {e.id for e in attached}
    wanted = [i for i in dict.fromkeys(ids) if i not in attached_ids]
    if not wanted:
        return []
    found = {e.id: e for e in session.scalars(select(Experiment).where(Experiment.id.in_(wanted)))}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise InvalidInput(f"unknown experiment(s): {missing}", field="open_data_ids")
    closed = [found[i] for i in wanted if not found[i].proposal.is_open_data(now)]
    if closed:
        # Only the ids sent and their release dates: the facility publishes when data opens.
        reasons = [
            f"experiment {e.id} is under embargo until {e.proposal.public_at:%Y-%m-%d}"
            if e.proposal.public_at else f"experiment {e.id} has no release date"
            for e in closed
        ]
        hint = ""
        if actor.id is not None and any(actor.id in {m.id for m in e.members} for e in closed):
            hint = " (experiments you are a member of go in experiment_ids)"
        raise Forbidden("not open data yet: " + "; ".join(reasons) + hint, field="open_data_ids")
    return [found[i] for i in wanted]


def _cloud_for(session: Session, plan: Plan, settings: Settings) -> Cloud:
    cloud_id = plan.flavour.cloud_id or plan.image.cloud_id
    if cloud_id is not None:
        cloud = session.get(Cloud, cloud_id)
    else:
        cloud = session.scalar(select(Cloud).where(Cloud.name == settings.default_cloud))
    if cloud is None or not cloud.enabled:
        raise Conflict(f"the cloud for this plan ({settings.default_cloud!r}) is not configured or disabled")
    return cloud


@dataclass(frozen=True)
class Allowance:
    """What a feature built on instances (GPU bookings) says of one machine before it is stored:
    ``refusal`` when units it needs over its life are held for others; ``until`` when it is
    made from the owner's own booking, which it may not outlive."""

    refusal: str | None = None
    until: datetime | None = None


# (the cloud, the flavour, when the machine would end) -> the allowance for it.
CheckAllowance = Callable[[Cloud, Flavour, datetime], Allowance]


def new_uid() -> str:
    return secrets.token_hex(6)


def create_instance(
    actor: Actor, session: Session, clock: Clock, settings: Settings, data: CreateInstance, *,
    capacity: CloudHost | None = None, allowance: CheckAllowance | None = None,
) -> Instance:
    """Store a new instance and queue its creation. With ``capacity`` (the running clouds), a
    flavour the cloud has no room for now is refused before the cloud is asked (NoCapacity);
    where the cloud cannot say, it decides (its "no valid host" stays the last word).
    ``allowance`` (the bookings' say) refuses a machine whose units are booked by others during
    its life, or ends it with the owner's booking it is made from."""
    require(actor, "create_instance")
    assert actor.user is not None
    owner = actor.user
    now = clock.now()
    experiments = _experiments_for(actor, session, data.experiment_ids)
    open_data = _open_data_for(actor, session, data.open_data_ids, experiments, now)
    # Open data is extra: it neither stands in for an experiment of one's own nor widens the
    # plans (sizes limited to an instrument stay with that instrument's users).
    if not experiments:
        require(actor, "create_instance_without_experiment")
    plan = next((p for p in plans_for(actor, session, experiments) if p.id == data.plan_id), None)
    if plan is None:
        raise InvalidInput("this plan is not available to you for these experiments", field="plan_id")
    check_quota(session, owner)
    cloud = _cloud_for(session, plan, settings)
    # A machine of the plan already booted, if its pool has one (its room is taken already): its
    # owner is given by the CREATE command. Taken in this transaction: a refusal below gives it back.
    warm_machine = warm.take(session, plan, cloud, now)
    if capacity is not None and warm_machine is None:
        room = room_on(capacity, cloud, plan.flavour)
        if room.available is False:
            raise NoCapacity(
                f"{plan.flavour.name} cannot be had now on cloud {cloud.name!r}: {room.message}",
                field="plan_id", flavour=plan.flavour.name, needs=room.needs,
            )

    site = site_for_cloud(cloud.config, settings.provisioning)
    check_identity(owner, experiments, site, settings.posix)

    max_hours = max_lifetime_hours(plan.flavour, actor.roles, settings.lifetimes, _groups(actor))
    hours = min(data.lifetime_hours or max_hours, max_hours)
    terminates_at = now + timedelta(hours=hours)
    booked_until = None
    if allowance is not None:
        said = allowance(cloud, plan.flavour, terminates_at)
        if said.refusal is not None:
            raise NoCapacity(f"{plan.flavour.name} cannot be had now: {said.refusal}", field="plan_id",
                             flavour=plan.flavour.name)
        if said.until is not None:
            booked_until = said.until
            terminates_at = min(terminates_at, said.until)
    instance = Instance(
        uid=new_uid(),
        name=data.name,
        comments=data.comments,
        owner=owner,
        plan=plan,
        cloud=cloud,
        state=InstanceState.BUILDING,
        screen_width=data.screen_width,
        screen_height=data.screen_height,
        keyboard_layout=data.keyboard_layout,
        secret=secrets.token_urlsafe(24),
        provider_state={},
        created_at=now,
        state_changed_at=now,
        terminates_at=terminates_at,
        booked_until=booked_until,
        last_seen_at=now,
        experiments=experiments,
        open_data_experiments=open_data,
        home=_home(data.own_home, cloud.kind == "local" or bool(site.home_mount_template), settings),
    )
    instance.members.append(InstanceMember(user=owner, role=MemberRole.OWNER, created_at=now))
    if warm_machine is not None:
        warm.hand_over(warm_machine, instance)
    session.add(instance)
    session.flush()
    if warm_machine is not None:
        warm_machine.instance_id = instance.id
    _command(actor, session, clock, instance, CommandAction.CREATE)
    record(actor, session, clock, "instance.create", target_type="instance", target_id=instance.uid,
           plan=plan.id, experiments=[e.external_id for e in experiments],
           open_data=[e.external_id for e in open_data], warm=warm_machine is not None)
    return instance


def _home(own: bool, cloud_shares_homes: bool, settings: Settings) -> InstanceHome:
    """The machine's home, fixed for its life: its own when asked for or when the cloud keeps no
    home across machines; else the owner's shared home, where members act only if the facility says so."""
    if own or not cloud_shares_homes:
        return InstanceHome.OWN
    return InstanceHome.OPEN if settings.sharing.shared_instance_home == "shared" else InstanceHome.SHARED


def _command(actor: Actor, session: Session, clock: Clock, instance: Instance, action: CommandAction) -> InstanceCommand:
    cmd = InstanceCommand(
        instance_id=instance.id, actor_id=actor.id, action=action,
        state=CommandState.PENDING, created_at=clock.now(),
    )
    session.add(cmd)
    session.flush()  # the flush hook wakes the workers at the commit (visa.db, visa.instances.changes)
    return cmd


def get_instance(actor: Actor, session: Session, uid: str) -> Instance:
    instance = session.scalar(select(Instance).where(Instance.uid == uid, Instance.deleted_at.is_(None)))
    if instance is None or not allowed(actor, "instance.view", instance):
        raise NotFound("no such instance", field="uid")
    return instance


# Lists show a flavour's size, not its rules: its limits and lifetimes load only if asked for.
# The lists load what they show: JSON columns (decoded on every row, read by no list) and the
# secret stay behind; code that reads one later loads it then.
LIST_OPTIONS = (
    defer(Instance.provider_state),
    defer(Instance.secret),
    defaultload(Instance.owner).load_only(User.username, User.full_name, User.active),
    defaultload(Instance.plan).defaultload(Plan.flavour).lazyload(Flavour.limits),
    defaultload(Instance.plan).defaultload(Plan.flavour).lazyload(Flavour.lifetimes),
    defaultload(Instance.plan).defaultload(Plan.image).defer(Image.options),
    defaultload(Instance.cloud).defer(Cloud.config),
    defaultload(Instance.members).defaultload(InstanceMember.user).load_only(User.username, User.full_name, User.active),
)


def list_instances(actor: Actor, session: Session) -> list[Instance]:
    """The actor's own instances and those shared with them."""
    if actor.user is None:
        return []
    return list(
        session.scalars(
            select(Instance)
            .join(InstanceMember, InstanceMember.instance_id == Instance.id)
            .where(InstanceMember.user_id == actor.user.id, Instance.deleted_at.is_(None))
            .order_by(Instance.created_at.desc(), Instance.id.desc())
            .options(*LIST_OPTIONS)
        ).unique()
    )


def request_action(
    actor: Actor, session: Session, clock: Clock, instance: Instance, action: CommandAction
) -> InstanceCommand:
    """Start, stop, reboot or delete: checked here, carried out by the executor."""
    require(actor, "instance.delete" if action == CommandAction.DELETE else "instance.control", instance)
    if action == CommandAction.DELETE:
        if instance.state == InstanceState.DELETING:
            raise Conflict("the instance is already being deleted")
        instance.state = InstanceState.DELETING
        instance.state_changed_at = clock.now()
    else:
        allowed_from = ALLOWED_FROM.get(action, frozenset())
        if instance.state not in allowed_from:
            raise Conflict(f"cannot {action.value.lower()} an instance that is {instance.state.value}")
        instance.state = {
            CommandAction.START: InstanceState.STARTING,
            CommandAction.STOP: InstanceState.STOPPING,
            CommandAction.REBOOT: InstanceState.REBOOTING,
        }[action]
        instance.state_changed_at = clock.now()
    cmd = _command(actor, session, clock, instance, action)
    record(actor, session, clock, f"instance.{action.value.lower()}", target_type="instance", target_id=instance.uid)
    return cmd


EDITABLE = ("name", "comments", "keyboard_layout", "screen_width", "screen_height", "clipboard_to_viewers")


def edit_instance(actor: Actor, session: Session, clock: Clock, instance: Instance, data: EditInstance) -> list[str]:
    """The owner changes the name, comments, keyboard layout, screen size or whether the desktop's
    clipboard reaches view-only members; the desktop is given these at the next connection.
    Returns the fields that changed (audited)."""
    require(actor, "instance.edit", instance)
    if instance.state == InstanceState.DELETING:
        raise Conflict("the instance is being deleted")
    changes = {k: getattr(data, k) for k in EDITABLE if k in data.model_fields_set and getattr(data, k) != getattr(instance, k)}
    if not changes:
        return []
    old = {k: getattr(instance, k) for k in changes}
    for key, value in changes.items():
        setattr(instance, key, value)
    session.flush()
    # Free text goes to the audit log only as its length.
    shown = {k: (len(v) if k == "comments" else v) for k, v in changes.items()}
    before = {k: (len(v) if k == "comments" else v) for k, v in old.items()}
    record(actor, session, clock, "instance.edit", target_type="instance", target_id=instance.uid,
           old=before, new=shown)
    return list(changes)


# --- everyone's instances (administrators; the instance rules still apply) --------------------------

RUNNING_STATES = frozenset(set(InstanceState) - {InstanceState.STOPPED, InstanceState.DELETED, InstanceState.ERROR})

ACTIVE_SESSION_WINDOW = timedelta(minutes=5)

MAX_LIFETIME_CHANGE = timedelta(days=366)



def search_instances(actor: Actor, session: Session, q: InstanceQuery) -> tuple[list[Instance], Total]:
    """Everyone's instances, filtered, sorted and one page at a time (relations loaded eagerly)."""
    ids, total = search_instance_ids(actor, session, q)
    if not ids:
        return [], total
    rows = {i.id: i for i in session.scalars(select(Instance).where(Instance.id.in_(ids)).options(*LIST_OPTIONS)).unique()}
    return [rows[i] for i in ids if i in rows], total


def search_instance_ids(actor: Actor, session: Session, q: InstanceQuery) -> tuple[list[int], Total]:
    """The ids of one page of everyone's instances, filtered and sorted, and how many match in all
    (counted up to ``paging.COUNT_LIMIT``)."""
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
    if q.attribute:
        for definition_id, value in attribute_filters(session, q.attribute):
            query = query.where(Instance.id.in_(select(InstanceAttribute.instance_id).where(
                InstanceAttribute.definition_id == definition_id, InstanceAttribute.value == value)))
    if q.q:
        like = f"%{escape_like(q.q)}%"
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
    total = count_upto(session, query.with_only_columns(Instance.id))
    ids = list(session.scalars(ids_query.limit(q.per_page).offset((q.page - 1) * q.per_page)))
    return ids, total


def get_any_instance(actor: Actor, session: Session, uid: str, *, deleted: bool = True) -> Instance:
    require(actor, "view_all_instances")
    query = select(Instance).where(Instance.uid == uid)
    if not deleted:
        query = query.where(Instance.deleted_at.is_(None))
    instance = session.scalar(query)
    if instance is None:
        raise NotFound("no such instance", field="uid")
    return instance


def all_instances(actor: Actor, session: Session, *, deleted: bool = False) -> list[Instance]:
    """Every instance, oldest first; deleted ones too if ``deleted`` (for operators)."""
    require(actor, "view_all_instances")
    query = select(Instance).order_by(Instance.created_at)
    if not deleted:
        query = query.where(Instance.deleted_at.is_(None))
    return list(session.scalars(query))


def instance_by_uid(actor: Actor, session: Session, uid: str) -> Instance:
    """Any instance, deleted or not, by its uid; the error names the uid asked for (for operators)."""
    require(actor, "view_all_instances")
    instance = session.scalar(select(Instance).where(Instance.uid == uid))
    if instance is None:
        raise NotFound(f"no instance {uid!r}", field="uid")
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


def act_on_instance(actor: Actor, session: Session, clock: Clock, uid: str, action: CommandAction) -> Instance:
    """Reboot, stop, start or delete anyone's instance (the instance rules still apply)."""
    instance = get_any_instance(actor, session, uid, deleted=False)
    request_action(actor, session, clock, instance, action)
    return instance


def change_termination(
    actor: Actor, session: Session, clock: Clock, uid: str, terminates_at: datetime, reason: str = ""
) -> Instance:
    """Move an instance's termination date, earlier or later; audited with the old and new dates.

    Those who handle extension requests may set the date directly. A later date clears the
    lifetime warning already sent, so the owner is warned again before the new date.
    """
    require(actor, "handle_extensions")
    instance = get_any_instance(actor, session, uid, deleted=False)
    if terminates_at.tzinfo is None:
        raise InvalidInput("give the date with a time zone (e.g. 2026-05-01T12:00:00Z)", field="terminates_at")
    now = clock.now()
    if terminates_at <= now:
        raise InvalidInput("the termination date must be in the future", field="terminates_at")
    if terminates_at - now > MAX_LIFETIME_CHANGE:
        raise InvalidInput("the termination date must be within a year", field="terminates_at")
    if instance.booked_until is not None and terminates_at > instance.booked_until:
        # Its booking's units go to others after it: a longer life needs another booking.
        raise InvalidInput(f"this machine was made from a booking that ends on {instance.booked_until:%Y-%m-%d %H:%M} "
                           "UTC: it cannot live longer", field="terminates_at")
    old = instance.terminates_at
    instance.terminates_at = terminates_at
    if terminates_at > old:
        instance.lifetime_warned_at = None
    session.flush()
    record(actor, session, clock, "instance.termination", target_type="instance", target_id=instance.uid,
           old=old.isoformat(), new=terminates_at.isoformat(), reason=reason[:500])
    return instance


MEMBER_ACCESS = {"image": None, "owner_required": False, "unrestricted": True}


def member_access_mode(instance: Instance) -> str:
    return {v: k for k, v in MEMBER_ACCESS.items()}[instance.unrestricted_member_access]


def set_member_access(actor: Actor, session: Session, clock: Clock, instance: Instance, mode: str) -> Instance:
    """Whether members other than the owner may connect only while the owner is connected, for
    this instance: as its image says (``image``), always (``owner_required``) or never
    (``unrestricted``). The owner chooses, or an administrator; staff never wait either way.
    Audited with the old and new modes."""
    require(actor, "instance.member_access", instance)
    if mode not in MEMBER_ACCESS:
        raise InvalidInput(f"unknown mode; one of {', '.join(MEMBER_ACCESS)}", field="mode")
    old = member_access_mode(instance)
    if old != mode:
        instance.unrestricted_member_access = MEMBER_ACCESS[mode]
        session.flush()
        record(actor, session, clock, "instance.member_access", target_type="instance", target_id=instance.uid,
               old=old, new=mode)
    return instance


def render_userdata(actor: Actor, session: Session, clock: Clock, settings: Settings, uid: str, *,
                    audit: bool = True) -> str:
    """What the machine receives at boot, as rendered now, with its secrets masked.

    Reads through the API are audited; the instance page's preview is part of viewing it.
    """
    instance = get_any_instance(actor, session, uid)
    from visa.instances.spec import render_for_operator

    text = render_for_operator(session, instance.uid, settings.provisioning)
    if audit:
        record(actor, session, clock, "instance.userdata.view", target_type="instance", target_id=uid)
    return text


def _counts(session: Session, column: Any, *joins: Any) -> dict[str, int]:
    query = select(column, func.count(Instance.id)).select_from(Instance)
    for j in joins:
        query = query.join(*j) if isinstance(j, tuple) else query.join(j)
    query = query.where(Instance.deleted_at.is_(None)).group_by(column)
    return {str(getattr(k, "value", k)): int(n) for k, n in session.execute(query)}


def stats(actor: Actor, session: Session, clock: Clock) -> dict[str, Any]:
    """The dashboard's figures about instances and users (the clouds' own figures come from visa.clouds.service)."""
    require(actor, "view_all_instances")
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
    }


def owned_counts(session: Session, user_ids: list[int]) -> dict[int, int]:
    """How many live instances each of these users owns."""
    if not user_ids:
        return {}
    return dict(session.execute(
        select(Instance.owner_id, func.count(Instance.id))
        .where(Instance.owner_id.in_(user_ids), Instance.deleted_at.is_(None))
        .group_by(Instance.owner_id)
    ).all())


def by_flavour(session: Session) -> dict[int, int]:
    """How many live instances use each flavour (by flavour id)."""
    rows = session.execute(
        select(Plan.flavour_id, func.count(Instance.id)).join(Plan, Plan.id == Instance.plan_id)
        .where(Instance.deleted_at.is_(None)).group_by(Plan.flavour_id)
    )
    return {int(k): int(n) for k, n in rows}


def usage_by_cloud(actor: Actor, session: Session) -> dict[str, dict[str, int]]:
    """What visa's machines that hold resources use of each cloud, by cloud name."""
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
    return used


def gpu_users(actor: Actor, session: Session) -> list[Instance]:
    """visa's machines with GPUs (their flavour has some), by cloud, biggest first. Stopped ones
    are listed too: a stopped server keeps its allocation on OpenStack (the page shows states)."""
    require(actor, "view_gpu_pools")
    return list(session.scalars(
        select(Instance).join(Plan, Plan.id == Instance.plan_id).join(Flavour, Flavour.id == Plan.flavour_id)
        .where(Instance.deleted_at.is_(None), Instance.state != InstanceState.DELETED, Flavour.gpu_count > 0)
        .order_by(Instance.cloud_id, Flavour.gpu_count.desc(), Instance.created_at)
    ))
