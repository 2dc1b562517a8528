"""Keeps instance states true to the cloud: one list call per cloud per cycle.

Cloud states are mapped by the provider; here they meet visa's own: a state asked for by
a command (STARTING, STOPPING, REBOOTING) is kept for a grace period while the cloud
catches up, cloud ACTIVE is refined by probing the ports, and instances being deleted are
deleted once the cloud reports them stopped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select

from visa.catalogue.models import Protocol
from visa.clouds.base import Server
from visa.commands.executor import DELETABLE, soft_delete, store_server, with_retries
from visa.commands.readiness import PROBE_TIMEOUT, probe_all
from visa.errors import CloudError
from visa.instances.models import Instance, InstanceState
from visa.provisioning import report
from visa.services import Services

log = logging.getLogger(__name__)

# How long a state asked for by a command wins over what the cloud still reports.
TRANSITION_GRACE = timedelta(seconds=120)
TRANSITIONAL = {
    InstanceState.STOPPING: frozenset({InstanceState.ACTIVE, InstanceState.STOPPING}),
    InstanceState.STARTING: frozenset({InstanceState.STOPPED, InstanceState.BUILDING}),
    InstanceState.REBOOTING: frozenset({InstanceState.ACTIVE, InstanceState.REBOOTING}),
}
READY_STATES = frozenset({InstanceState.ACTIVE})
# A machine the cloud lost is marked ERROR, unless it was on its way out anyway.
LOST_MESSAGE = "the cloud no longer has this machine"
BOOT_TIMEOUT_MESSAGE = (
    "the machine is running but its {service} did not answer within {minutes} minutes: its boot "
    "configuration may have failed. Reboot it, or delete it and create another; administrators can read "
    "its console log in the cloud"
)


# A starting machine's console is read at most this often (per process): it is the tail of a
# log, a cloud API call, so only for instances still starting and not every cycle.
BOOT_REPORT_SECONDS = 10.0
_last_report: dict[int, float] = {}
_MOUNT_MESSAGE_START = report.summary([report.StepFailure("data-mount", "")]).split("(", 1)[0]
_FAILED_MESSAGE_START = report.summary([report.StepFailure("boot", "")]).split("(", 1)[0]


def _boot_failures(provider, inst: Instance, *, answered: bool) -> list[report.StepFailure]:
    """What the starting machine's console says failed. Read once when its desktop first
    answers (the boot scripts start the desktop last), else at most every BOOT_REPORT_SECONDS."""
    if inst.state != InstanceState.STARTING or not inst.cloud_server_id:
        return []
    now = time.monotonic()
    if not answered and now - _last_report.get(inst.id, float("-inf")) < BOOT_REPORT_SECONDS:
        return []
    _last_report[inst.id] = now
    if len(_last_report) > 10_000:  # instances long gone
        _last_report.clear()
    try:
        return report.failures(provider.boot_report(inst.cloud_server_id))
    except CloudError as exc:
        log.info("console of instance %s not read: %s", inst.uid, exc.message)
        return []


def _timed_out_before(inst: Instance) -> bool:
    """In ERROR because its boot timed out or reported a failed step."""
    message = inst.error_message or ""
    return message.startswith(BOOT_TIMEOUT_MESSAGE.split("{", 1)[0]) or message.startswith(_FAILED_MESSAGE_START)


def _boot_timed_out(inst: Instance, now, timeout_seconds: int) -> bool:
    """The cloud has run the machine (STARTING) for longer than a boot may take, its desktop silent."""
    if inst.state != InstanceState.STARTING:
        return False
    since = inst.state_changed_at or inst.created_at
    return since is not None and (now - since).total_seconds() > timeout_seconds


@dataclass
class SyncResult:
    cloud: str
    servers: int = 0
    instances: int = 0
    changed: dict[str, str] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _decide(instance: Instance, server: Server | None, now) -> InstanceState | None:
    """The state the cloud implies, or None to probe the ports (cloud ACTIVE)."""
    changed_at = instance.state_changed_at or instance.created_at
    if server is None:
        if instance.state == InstanceState.BUILDING and now - changed_at < TRANSITION_GRACE:
            return InstanceState.BUILDING  # just asked for: Nova lists a server once it is scheduled
        return InstanceState.DELETED if instance.state == InstanceState.DELETING else InstanceState.ERROR
    cloud = server.state
    if instance.state == InstanceState.DELETING:
        return InstanceState.DELETING
    keep = TRANSITIONAL.get(instance.state)
    if keep and cloud in keep and now - changed_at < TRANSITION_GRACE:
        if instance.state == InstanceState.REBOOTING and now - changed_at > timedelta(seconds=10):
            return None  # after a short while, a rebooted machine is judged by its ports
        return instance.state
    if cloud == InstanceState.ACTIVE:
        return None
    return cloud


def sync_cloud(services: Services, cloud_name: str, *, only_unstable: bool = False,
               probe_timeout: float = PROBE_TIMEOUT) -> SyncResult:
    """One cycle for one cloud. ``only_unstable`` looks only at instances whose state moves soon."""
    from visa.instances.models import UNSTABLE_STATES

    started = time.perf_counter()
    result = SyncResult(cloud=cloud_name)
    if only_unstable and not _has_unstable(services, cloud_name):
        return result  # nothing moves there: no list call
    provider = services.provider(cloud_name)
    from visa.metrics import CLOUD_LIST_CALLS

    CLOUD_LIST_CALLS.labels(cloud=cloud_name).inc()
    try:
        servers = with_retries(services, provider.list_servers, f"list servers on cloud {cloud_name}")
    except CloudError as exc:
        # No answer is not an answer: nothing is changed until the cloud answers again.
        log.warning("sync of %s skipped: %s", cloud_name, exc.message)
        raise
    by_id = {s.id: s for s in servers}
    result.servers = len(servers)
    now = services.clock.now()

    with services.database.unit_of_work() as s:
        from visa.clouds.models import Cloud

        q = (
            select(Instance).join(Instance.cloud)
            .where(Cloud.name == cloud_name, Instance.deleted_at.is_(None), Instance.cloud_server_id.is_not(None))
        )
        if only_unstable:
            q = q.where(Instance.state.in_(UNSTABLE_STATES))
        instances = list(s.scalars(q).unique())
        result.instances = len(instances)
        to_probe: list[Instance] = []
        to_delete: list[Instance] = []
        for inst in instances:
            server = by_id.get(inst.cloud_server_id or "")
            if server is not None:
                store_server(inst, server, now)
            target = _decide(inst, server, now)
            if target is None:
                to_probe.append(inst)
                continue
            if target == InstanceState.DELETED:
                soft_delete(inst, now)
                result.deleted.append(inst.uid)
                continue
            if inst.state == InstanceState.DELETING and server is not None and server.state in DELETABLE:
                to_delete.append(inst)
                continue
            if target == InstanceState.ERROR and server is None:
                if inst.state != InstanceState.ERROR:
                    inst.error_message = LOST_MESSAGE
                    result.lost.append(inst.uid)
            elif target == InstanceState.ERROR and server is not None and server.fault:
                inst.error_message = server.fault
            _set_state(inst, target, now, result)
        boot_timeout = services.settings.provisioning.boot_timeout_seconds
        for inst_id, state in probe_all(to_probe, timeout=probe_timeout).items():
            inst = next(i for i in to_probe if i.id == inst_id)
            answered = state != InstanceState.STARTING
            failed = _boot_failures(provider, inst, answered=answered)
            if failed and answered:
                # The desktop works: usable, with what failed said (e.g. data not mounted).
                inst.error_message = report.summary(failed)
                log.warning("instance %s started with failed steps: %s", inst.uid, inst.error_message)
                state = InstanceState.PARTIALLY_ACTIVE
            elif any(f.fatal for f in failed):
                # A step the desktop needs failed: say so now rather than after the boot timeout.
                inst.error_message = report.summary(failed)
                log.warning("instance %s: boot failed: %s", inst.uid, inst.error_message)
                state = InstanceState.ERROR
            elif state == InstanceState.ACTIVE and (inst.error_message or "").startswith(_MOUNT_MESSAGE_START) \
                    and inst.state == InstanceState.PARTIALLY_ACTIVE:
                continue  # its data are still not mounted: it keeps its message
            elif state == InstanceState.ACTIVE:
                inst.error_message = None
            elif state == InstanceState.STARTING and inst.state == InstanceState.ERROR and _timed_out_before(inst):
                continue  # still silent: it stays in ERROR with its message
            elif state == InstanceState.STARTING and _boot_timed_out(inst, now, boot_timeout):
                # Not left STARTING for ever: a clear end the user and the admins can act on.
                # (A desktop that answers later still makes it ACTIVE at the next probe.)
                desktop = inst.plan.image.port_of(Protocol.VNC) or inst.plan.image.port_of(Protocol.RDP)
                service = "desktop" if desktop else "service"
                inst.error_message = BOOT_TIMEOUT_MESSAGE.format(service=service, minutes=boot_timeout // 60)
                log.warning("instance %s: no answer %d s after the cloud started it", inst.uid, boot_timeout)
                state = InstanceState.ERROR
            _set_state(inst, state, now, result)
        deletions = [(i.id, i.cloud_server_id, i.uid) for i in to_delete]

    provider_delete_ids = []
    for inst_id, server_id, uid in deletions:
        try:
            with_retries(services, lambda sid=server_id: provider.delete(sid), f"delete on cloud {cloud_name}")
        except CloudError as exc:
            log.warning("delete of instance %s failed, will retry: %s", uid, exc.message)
            continue
        provider_delete_ids.append(inst_id)
        result.deleted.append(uid)
    if provider_delete_ids:
        with services.database.unit_of_work() as s:
            for inst in s.scalars(select(Instance).where(Instance.id.in_(provider_delete_ids))):
                soft_delete(inst, services.clock.now())
    result.seconds = time.perf_counter() - started
    from visa.metrics import SYNC_DURATION

    SYNC_DURATION.labels(cloud=cloud_name).observe(result.seconds)
    if result.changed or result.deleted:  # the streams were told at the commit (visa.instances.changes)
        log.info("sync %s: %d servers, %d changed, %d deleted", cloud_name, result.servers,
                 len(result.changed), len(result.deleted))
    return result


def _has_unstable(services: Services, cloud_name: str) -> bool:
    from visa.clouds.models import Cloud
    from visa.instances.models import UNSTABLE_STATES

    with services.database.sessionmaker() as s:
        return s.scalar(
            select(Instance.id).join(Instance.cloud)
            .where(Cloud.name == cloud_name, Instance.deleted_at.is_(None), Instance.cloud_server_id.is_not(None),
                   Instance.state.in_(UNSTABLE_STATES)).limit(1)
        ) is not None


def _set_state(inst: Instance, state: InstanceState, now, result: SyncResult) -> None:
    if inst.state != state:
        result.changed[inst.uid] = f"{inst.state.value}->{state.value}"
        inst.state = state
        inst.state_changed_at = now
        if state == InstanceState.ACTIVE:
            from visa.metrics import observe_active

            observe_active(inst, now)  # time to first ACTIVE (once per instance)


def sync_all(services: Services, *, only_unstable: bool = False) -> list[SyncResult]:
    from visa.clouds.models import Cloud

    with services.database.sessionmaker() as s:
        names = list(s.scalars(select(Cloud.name).where(Cloud.enabled.is_(True))))
    results = []
    for name in names:
        try:
            results.append(sync_cloud(services, name, only_unstable=only_unstable))
        except CloudError:
            continue
    return results
