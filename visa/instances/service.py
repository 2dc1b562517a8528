"""The rules of instances: who may create one, how long it lives, what may be done to it.

Functions take the actor first, then the session and a clock; they flush and never commit.
Cloud work is not done here: an action stores a command, which the executor carries out
after the transaction commits.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.audit.service import record
from visa.catalogue.models import Plan
from visa.catalogue.service import max_lifetime_hours, plans_for
from visa.clock import Clock
from visa.clouds.models import Cloud
from visa.db import after_commit
from visa.errors import Conflict, Forbidden, InvalidInput, NotFound, QuotaExceeded
from visa.experiments.models import Experiment
from visa.instances.models import (
    CommandAction,
    CommandState,
    Instance,
    InstanceCommand,
    InstanceMember,
    InstanceState,
    MemberRole,
)
from visa.instances.schemas import CreateInstance
from visa.policy import allowed, require
from visa.settings import Settings
from visa.users.models import User

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
    if user.instance_quota < 0:
        return
    count = active_instance_count(session, user)
    if count >= user.instance_quota:
        raise QuotaExceeded(
            f"you have {count} instance(s) and your quota is {user.instance_quota}: delete one first",
            quota=user.instance_quota,
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


def new_uid() -> str:
    return secrets.token_hex(6)


def create_instance(
    actor: Actor, session: Session, clock: Clock, settings: Settings, data: CreateInstance
) -> Instance:
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

    max_hours = max_lifetime_hours(plan.flavour, actor.roles, settings.lifetimes)
    hours = min(data.lifetime_hours or max_hours, max_hours)
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
        terminates_at=now + timedelta(hours=hours),
        last_seen_at=now,
        experiments=experiments,
        open_data_experiments=open_data,
    )
    instance.members.append(InstanceMember(user=owner, role=MemberRole.OWNER, created_at=now))
    session.add(instance)
    session.flush()
    _command(actor, session, clock, instance, CommandAction.CREATE)
    record(actor, session, clock, "instance.create", target_type="instance", target_id=instance.uid,
           plan=plan.id, experiments=[e.external_id for e in experiments],
           open_data=[e.external_id for e in open_data])
    return instance


def _command(actor: Actor, session: Session, clock: Clock, instance: Instance, action: CommandAction) -> InstanceCommand:
    cmd = InstanceCommand(
        instance_id=instance.id, actor_id=actor.id, action=action,
        state=CommandState.PENDING, created_at=clock.now(),
    )
    session.add(cmd)
    session.flush()
    after_commit(session, _wake_worker)
    return cmd


def _wake_worker() -> None:
    from visa.instances.worker import wake

    wake()


def get_instance(actor: Actor, session: Session, uid: str) -> Instance:
    instance = session.scalar(select(Instance).where(Instance.uid == uid, Instance.deleted_at.is_(None)))
    if instance is None or not allowed(actor, "instance.view", instance):
        raise NotFound("no such instance", field="uid")
    return instance


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

