"""Instances as the API shows them. Never the secret, never a connect token."""

from __future__ import annotations

from visa.actor import Actor
from visa.clock import Clock
from visa.experiments.models import Experiment
from visa.instances.models import ExtensionRequest, Instance, InstanceMember
from visa.instances.schemas import (
    ExperimentBrief,
    ExtensionInstance,
    ExtensionOut,
    FlavourBrief,
    ImageBrief,
    InstanceOut,
    MemberOut,
    OwnerOut,
    PlanBrief,
    Screen,
)
from visa.policy import member_role


def _experiment(e: Experiment) -> ExperimentBrief:
    return ExperimentBrief(id=e.id, external_id=e.external_id, proposal=e.proposal.identifier,
                           instrument=e.instrument.name)


def instance_out(instance: Instance, actor: Actor, clock: Clock) -> InstanceOut:
    plan = instance.plan
    role = member_role(actor, instance)
    return InstanceOut(
        uid=instance.uid,
        name=instance.name,
        state=instance.state.value,
        owner=OwnerOut(username=instance.owner.username, full_name=instance.owner.full_name),
        role=role.value if role else None,
        plan=PlanBrief(
            id=plan.id,
            image=ImageBrief(name=plan.image.name, environment=plan.image.environment, version=plan.image.version),
            flavour=FlavourBrief(
                name=plan.flavour.name, cores=plan.flavour.cores, memory_mb=plan.flavour.memory_mb,
                gpu_kind=plan.flavour.gpu_kind, gpu_count=plan.flavour.gpu_count,
            ),
        ),
        protocols=sorted(p.protocol.value for p in plan.image.protocols),
        experiments=[_experiment(e) for e in instance.experiments],
        open_data=[_experiment(e) for e in instance.open_data_experiments],
        cloud=instance.cloud.name,
        screen=Screen(width=instance.screen_width, height=instance.screen_height),
        keyboard_layout=instance.keyboard_layout,
        error=instance.error_message,
        created_at=instance.created_at,
        terminates_at=instance.terminates_at,
        seconds_left=max(0, int((instance.terminates_at - clock.now()).total_seconds())),
        last_seen_at=instance.last_seen_at,
        comments=instance.comments,
    )


def member_out(m: InstanceMember) -> MemberOut:
    return MemberOut(username=m.user.username, full_name=m.user.full_name, role=m.role.value, since=m.created_at)


def extension_out(req: ExtensionRequest, instance: Instance | None = None) -> ExtensionOut:
    return ExtensionOut(
        id=req.id,
        state=req.state.value,
        requested_until=req.requested_until,
        granted_until=req.granted_until,
        comment=req.comment,
        response=req.response,
        created_at=req.created_at,
        handled_at=req.handled_at,
        instance=ExtensionInstance(
            uid=instance.uid, name=instance.name, owner=instance.owner.username, terminates_at=instance.terminates_at,
        ) if instance is not None else None,
    )
