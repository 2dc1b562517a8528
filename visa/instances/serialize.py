"""Instances as the API shows them. Never the secret, never a connect token."""

from __future__ import annotations

from typing import Any

from visa.actor import Actor
from visa.clock import Clock
from visa.instances.models import Instance
from visa.policy import member_role


def instance_dict(instance: Instance, actor: Actor, clock: Clock) -> dict[str, Any]:
    plan = instance.plan
    now = clock.now()
    return {
        "uid": instance.uid,
        "name": instance.name,
        "state": instance.state.value,
        "owner": {"username": instance.owner.username, "full_name": instance.owner.full_name},
        "role": (r.value if (r := member_role(actor, instance)) else None),
        "plan": {
            "id": plan.id,
            "image": {"name": plan.image.name, "environment": plan.image.environment, "version": plan.image.version},
            "flavour": {
                "name": plan.flavour.name, "cores": plan.flavour.cores, "memory_mb": plan.flavour.memory_mb,
                "gpu_kind": plan.flavour.gpu_kind, "gpu_count": plan.flavour.gpu_count,
            },
        },
        "protocols": sorted(p.protocol.value for p in plan.image.protocols),
        "experiments": [
            {"id": e.id, "external_id": e.external_id, "proposal": e.proposal.identifier, "instrument": e.instrument.name}
            for e in instance.experiments
        ],
        "open_data": [
            {"id": e.id, "external_id": e.external_id, "proposal": e.proposal.identifier, "instrument": e.instrument.name}
            for e in instance.open_data_experiments
        ],
        "cloud": instance.cloud.name,
        "screen": {"width": instance.screen_width, "height": instance.screen_height},
        "keyboard_layout": instance.keyboard_layout,
        "error": instance.error_message,
        "created_at": instance.created_at.isoformat(),
        "terminates_at": instance.terminates_at.isoformat(),
        "seconds_left": max(0, int((instance.terminates_at - now).total_seconds())),
        "last_seen_at": instance.last_seen_at.isoformat() if instance.last_seen_at else None,
        "comments": instance.comments,
    }
