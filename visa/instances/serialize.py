"""Instances as the API shows them. Never the secret, never a connect token."""

from __future__ import annotations

from visa.actor import Actor
from visa.clock import Clock
from visa.experiments.models import Experiment
from visa.instances.listing import ExperimentRow, InstanceRow
from visa.instances.models import ExtensionRequest, Instance
from visa.instances.schemas import (
    ExperimentBrief,
    ExtensionInstance,
    ExtensionOut,
    FlavourBrief,
    ImageBrief,
    InstanceOut,
    MemberAccessOut,
    OwnerOut,
    PlanBrief,
    Screen,
)
from visa.instances.service import member_access_mode
from visa.policy import member_role


def _experiment(e: Experiment) -> ExperimentBrief:
    return ExperimentBrief(id=e.id, external_id=e.external_id, proposal=e.proposal.identifier,
                           instrument=e.instrument.name)


def member_access(instance: Instance) -> MemberAccessOut:
    return MemberAccessOut(uid=instance.uid, member_access=member_access_mode(instance),
                           members_need_owner=instance.members_need_owner)


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
        clipboard_to_viewers=instance.clipboard_to_viewers,
        error=instance.error_message,
        created_at=instance.created_at,
        terminates_at=instance.terminates_at,
        seconds_left=max(0, int((instance.terminates_at - clock.now()).total_seconds())),
        last_seen_at=instance.last_seen_at,
        comments=instance.comments,
    )


def _brief(e: ExperimentRow) -> dict:
    return {"id": e.id, "external_id": e.external_id, "proposal": e.proposal, "instrument": e.instrument}


def row_fields(item: InstanceRow, clock: Clock) -> dict:
    """``instance_out``'s fields from a list's row (visa/instances/listing.py), as plain values:
    the caller validates them in one call (a model per nested object costs more than the row)."""
    r = item.row
    return {
        "uid": r.uid,
        "name": r.name,
        "state": r.state.value,
        "owner": {"username": r.owner_username, "full_name": r.owner_full_name},
        "role": item.role.value if item.role else None,
        "plan": {
            "id": r.plan_id,
            "image": {"name": r.image_name, "environment": r.image_environment, "version": r.image_version},
            "flavour": {
                "name": r.flavour_name, "cores": r.flavour_cores, "memory_mb": r.flavour_memory_mb,
                "gpu_kind": r.flavour_gpu_kind, "gpu_count": r.flavour_gpu_count,
            },
        },
        "protocols": item.protocols,
        "experiments": [_brief(e) for e in item.experiments],
        "open_data": [_brief(e) for e in item.open_data],
        "cloud": r.cloud_name,
        "screen": {"width": r.screen_width, "height": r.screen_height},
        "keyboard_layout": r.keyboard_layout,
        "clipboard_to_viewers": r.clipboard_to_viewers,
        "error": r.error_message,
        "created_at": r.created_at,
        "terminates_at": r.terminates_at,
        "seconds_left": max(0, int((r.terminates_at - clock.now()).total_seconds())),
        "last_seen_at": r.last_seen_at,
        "comments": r.comments,
    }


def row_out(item: InstanceRow, clock: Clock) -> InstanceOut:
    return InstanceOut.model_validate(row_fields(item, clock))


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
