"""What the user sees while a machine is being built, started or rebooted: named steps,
read from the instance state and its command history (never a bare spinner).

requested -> machine created (started) in the cloud -> booting -> desktop answering -> ready
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from visa.catalogue.models import Protocol
from visa.instances.models import CommandAction, CommandState, Instance, InstanceCommand, InstanceState

FLOWS = (CommandAction.CREATE, CommandAction.START, CommandAction.REBOOT)
# States in which a build/start/reboot is under way or has just ended.
FLOW_STATES = frozenset({
    InstanceState.BUILDING, InstanceState.STARTING, InstanceState.REBOOTING,
    InstanceState.PARTIALLY_ACTIVE, InstanceState.ACTIVE, InstanceState.ERROR,
})
CLOUD_LABEL = {
    CommandAction.CREATE: "Machine created in the cloud",
    CommandAction.START: "Machine started in the cloud",
    CommandAction.REBOOT: "Machine restarted in the cloud",
}
REQUEST_LABEL = {
    CommandAction.CREATE: "Requested",
    CommandAction.START: "Start requested",
    CommandAction.REBOOT: "Reboot requested",
}


@dataclass(frozen=True)
class Step:
    key: str
    label: str
    status: str  # done | current | failed | todo
    at: str | None = None


def history(session: Session, instance: Instance, limit: int = 10) -> list[InstanceCommand]:
    """The latest commands on this instance, newest first."""
    return list(session.scalars(
        select(InstanceCommand).where(InstanceCommand.instance_id == instance.id)
        .order_by(InstanceCommand.created_at.desc(), InstanceCommand.id.desc()).limit(limit)
    ))


def _done_count(instance: Instance, cmd: InstanceCommand) -> int:
    """How many of the five steps are behind us."""
    state = instance.state
    if state == InstanceState.ACTIVE:
        return 5
    if state == InstanceState.PARTIALLY_ACTIVE:
        return 4  # the desktop answers; another service (e.g. Jupyter) does not yet
    if cmd.state != CommandState.DONE:
        return 1
    return 2  # the cloud has the machine; it is booting (BUILDING, STARTING, REBOOTING)


def steps(instance: Instance, commands: list[InstanceCommand]) -> dict[str, Any] | None:
    """The steps of the latest build/start/reboot, or None when none applies to the current state."""
    if instance.state not in FLOW_STATES:
        return None
    cmd = next((c for c in commands if c.action in FLOWS), None)
    if cmd is None:
        return None
    protocols = {p.protocol for p in instance.plan.image.protocols}
    service = "Desktop" if Protocol.VNC in protocols else "JupyterLab"
    done = _done_count(instance, cmd)
    failed = instance.state == InstanceState.ERROR or cmd.state == CommandState.FAILED
    labels = [
        ("requested", REQUEST_LABEL[cmd.action]),
        ("cloud", CLOUD_LABEL[cmd.action]),
        ("booting", "Booting"),
        ("service", f"{service} answering"),
        ("ready", "Ready"),
    ]
    times = {
        "requested": cmd.created_at.isoformat(),
        "cloud": cmd.finished_at.isoformat() if cmd.finished_at and cmd.state == CommandState.DONE else None,
        "ready": instance.state_changed_at.isoformat()
        if instance.state == InstanceState.ACTIVE and instance.state_changed_at else None,
    }
    out = []
    for i, (key, label) in enumerate(labels):
        if i < done:
            status = "done"
        elif i == done:
            status = "failed" if failed else "current"
        else:
            status = "todo"
        out.append(Step(key, label, status, times.get(key) if status == "done" else None))
    message = None
    if failed:
        message = instance.error_message or cmd.message or "the operation failed"
    return {
        "action": cmd.action.value,
        "steps": [asdict(s) for s in out],
        "done": done,
        "total": len(out),
        "failed": failed,
        "message": message,
        "finished": done == len(out),
    }


def progress_of(session: Session, instance: Instance) -> dict[str, Any]:
    """Steps plus a short command history, as the pages and the event stream show them."""
    commands = history(session, instance)
    return {
        "progress": steps(instance, commands),
        "history": [
            {
                "action": c.action.value, "state": c.state.value, "message": c.message,
                "created_at": c.created_at.isoformat(),
                "finished_at": c.finished_at.isoformat() if c.finished_at else None,
            }
            for c in commands
        ],
    }
