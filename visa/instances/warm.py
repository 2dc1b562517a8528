"""Warm pools: machines of chosen plans booted before anyone asks, so a create is ready in seconds.

A plan's ``warm`` windows (catalogue files, ``catalogue.service.warm_wanted``) say how many of
its machines are kept booted and unassigned at each time of the site's day. The scheduler's
``warm`` job (:func:`run`) keeps each pool at that size: it asks the cloud for the missing ones
(user-data with nothing of anyone's, ``provisioning.warm``), checks each one's helper (booted,
never assigned: READY; a machine that fails the check, or that the cloud lost or failed, is
deleted and never assigned) and deletes the surplus.

A create that matches a READY machine takes it (:func:`take`, in the create's transaction): the
instance gets the machine's uid, server, address and desktop secret, and its CREATE command
gives the machine its owner through the helper (``commands.executor``); the next pool cycle
starts a new one. A taken machine is the instance's: deleted with it, never back in a pool.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from visa.catalogue.models import Plan
from visa.catalogue.service import warm_wanted
from visa.clouds.base import Server, ServerSpec
from visa.clouds.models import Cloud
from visa.errors import CloudError, VisaError
from visa.instances.helper import CHECK, Channel, HelperTarget, SshHelper
from visa.instances.models import Instance, WarmMachine, WarmState
from visa.instances.probe_keys import public_key
from visa.provisioning import host_keys
from visa.provisioning.site import site_for_cloud
from visa.provisioning.spec import Port
from visa.provisioning.warm import WarmBoot, render_warm_user_data
from visa.services import Services
from visa.states import InstanceState

log = logging.getLogger(__name__)

LIVE = (WarmState.BOOTING, WarmState.READY)
# How long a booting machine may be missing from the cloud's list before it counts as lost.
LIST_GRACE = timedelta(seconds=120)
# A row whose create never reached the cloud (its process died) is given up after this long.
LOST_CREATE = timedelta(minutes=10)
# A pool refills once its taken machine was given its owner (the row goes then): a boot on the
# same hypervisor would slow the owner's start. A row older than this (its command's process
# died) holds nothing back.
ASSIGNING = timedelta(minutes=3)


@dataclass
class PoolResult:
    started: list[str] = field(default_factory=list)
    ready: list[str] = field(default_factory=list)
    deleted: dict[str, str] = field(default_factory=dict)  # uid -> why


def take(session: Session, plan: Plan, cloud: Cloud, now: datetime) -> WarmMachine | None:
    """A READY machine of this plan on this cloud, now TAKEN by the caller's transaction, or None.
    One conditional UPDATE each: two creates at once never take the same machine."""
    if cloud.kind == "local":
        return None
    ids = session.scalars(
        select(WarmMachine.id)
        .where(WarmMachine.plan_id == plan.id, WarmMachine.cloud_id == cloud.id,
               WarmMachine.state == WarmState.READY, WarmMachine.cloud_server_id.is_not(None))
        .order_by(WarmMachine.ready_at, WarmMachine.id).limit(5)
    ).all()
    for warm_id in ids:
        taken = session.execute(
            update(WarmMachine).where(WarmMachine.id == warm_id, WarmMachine.state == WarmState.READY)
            .values(state=WarmState.TAKEN, taken_at=now),
            execution_options={"synchronize_session": False},
        )
        if taken.rowcount:  # type: ignore[attr-defined]
            return session.scalars(
                select(WarmMachine).where(WarmMachine.id == warm_id).execution_options(populate_existing=True)
            ).one()
    return None


def hand_over(warm: WarmMachine, instance: Instance) -> None:
    """The instance takes the machine as it is: uid (the host key's), server, address, secret."""
    instance.uid = warm.uid
    instance.secret = warm.secret
    instance.cloud_server_id = warm.cloud_server_id
    instance.address = warm.address
    instance.provider_state = dict(warm.provider_state or {})


def target_of(uid: str, address: str | None, provider_state: dict | None) -> HelperTarget | None:
    if not address:
        return None
    port = ((provider_state or {}).get("ports") or {}).get("ssh") or 22
    return HelperTarget(uid, address, int(port))


def channel_of(services: Services) -> Channel:
    return services.warm_channel or SshHelper(services.settings)


def _boot(services: Services, plan: Plan, row: WarmMachine) -> ServerSpec:
    settings = services.settings
    image, flavour = plan.image, plan.flavour
    site = site_for_cloud(row.cloud.config, settings.provisioning)
    secret_key = settings.resolved_secret_key()
    machine = WarmBoot(uid=row.uid, secret=row.secret, image_name=image.name, image_options=dict(image.options or {}),
                       ports=tuple(Port(p.protocol, p.port, p.optional) for p in image.protocols))
    base = settings.network.base_group
    return ServerSpec(
        name=f"{settings.instance_name_prefix}-warm-{row.id}",
        instance_uid=row.uid,
        image_ref=image.cloud_image_ref,
        flavour_ref=flavour.cloud_flavour_ref,
        user_data=render_warm_user_data(
            machine, site=site, probe_public_key=public_key(settings),
            host_key=(host_keys.private_openssh(secret_key, row.uid), host_keys.public_line(secret_key, row.uid)),
        ),
        secret=row.secret,
        metadata={"visa_uid": row.uid, "visa_warm": "1"},
        protocols={p.protocol.value: p.port for p in image.protocols},
        cores=flavour.cores,
        memory_mb=flavour.memory_mb,
        security_groups=(base,) if base else (),
    )


def _store(row: WarmMachine, server: Server) -> None:
    row.cloud_server_id = server.id
    if server.address:
        row.address = server.address
    state = dict(row.provider_state or {})
    if server.ports:
        state["ports"] = dict(server.ports)
    row.provider_state = state


def _cloud_of(session: Session, plan: Plan, default_cloud: str) -> Cloud | None:
    """The enabled cloud the plan's machines run on (as a create finds it), or None."""
    cloud_id = plan.flavour.cloud_id or plan.image.cloud_id
    if cloud_id is not None:
        cloud = session.get(Cloud, cloud_id)
    else:
        cloud = session.scalar(select(Cloud).where(Cloud.name == default_cloud))
    return cloud if cloud is not None and cloud.enabled else None


def _plans(session: Session) -> list[Plan]:
    return [p for p in session.scalars(select(Plan).where(Plan.enabled.is_(True))).unique() if p.warm]


def run(services: Services, channel: Channel | None = None) -> PoolResult:
    """One cycle of every pool: check the machines, delete the failed and the surplus, start the missing."""
    channel = channel or channel_of(services)
    result = PoolResult()
    now = services.clock.now()
    local = now.astimezone(ZoneInfo(services.settings.provisioning.timezone)).time()
    with services.database.unit_of_work() as s:
        wanted: dict[tuple[int, int], int] = {}
        for plan in _plans(s):
            cloud = _cloud_of(s, plan, services.settings.default_cloud)
            if cloud is None or cloud.kind == "local":
                continue  # none to boot on; or sessions of visa's own host: no SSH, nothing to keep warm
            wanted[(plan.id, cloud.id)] = warm_wanted(plan, local)
        rows = list(s.scalars(select(WarmMachine).where(WarmMachine.state.in_(LIVE))).unique())
        clouds = {r.cloud_id: r.cloud.name for r in rows}
        clouds.update({c.id: c.name for c in s.scalars(select(Cloud).where(Cloud.id.in_({k[1] for k in wanted})))})
        machines = [(r.id, r.uid, r.plan_id, r.cloud_id, r.state, r.cloud_server_id, r.address,
                     dict(r.provider_state or {}), r.created_at) for r in rows]
        assigning = set(s.execute(
            select(WarmMachine.plan_id, WarmMachine.cloud_id)
            .where(WarmMachine.state == WarmState.TAKEN, WarmMachine.taken_at > now - ASSIGNING)).tuples())

        # A taken machine whose instance went before its owner was given: the instance deleted its server.
        s.execute(delete(WarmMachine).where(
            WarmMachine.state == WarmState.TAKEN,
            WarmMachine.instance_id.in_(select(Instance.id).where(Instance.deleted_at.is_not(None)))),
            execution_options={"synchronize_session": False})

    servers: dict[int, dict[str, Server] | None] = {}
    for cloud_id, name in clouds.items():
        try:
            servers[cloud_id] = {srv.id: srv for srv in services.provider(name).list_servers()}
        except CloudError as exc:
            log.warning("warm pool of cloud %s not checked: %s", name, exc.message)
            servers[cloud_id] = None
    timeout = timedelta(seconds=services.settings.provisioning.boot_timeout_seconds)
    alive: dict[tuple[int, int], list[tuple[int, str, WarmState, datetime]]] = {}
    for wid, uid, plan_id, cloud_id, state, server_id, address, pstate, created in machines:
        listed = servers.get(cloud_id)
        if listed is None:  # the cloud did not answer: nothing is decided on it
            alive.setdefault((plan_id, cloud_id), []).append((wid, uid, state, created))
            continue
        server = listed.get(server_id or "")
        why = None
        if server_id is None:
            why = "its create never reached the cloud" if now - created > LOST_CREATE else None
        elif server is None:
            # A server just asked for may not be in the cloud's list yet (Nova lists a build
            # request once it is scheduled): a booting machine is given a while.
            why = "the cloud no longer has it" if state == WarmState.READY or now - created > LIST_GRACE else None
        elif server.state == InstanceState.ERROR:
            why = f"the cloud failed it: {server.fault or 'no reason given'}"
        elif server.state == InstanceState.ACTIVE:
            target = target_of(uid, server.address or address, pstate)
            healthy = target is not None and channel(target, CHECK)
            if healthy and state == WarmState.BOOTING:
                if _mark_ready(services, wid, server):
                    result.ready.append(uid)
                    state = WarmState.READY
            elif not healthy and (state == WarmState.READY or now - created > timeout):
                why = "it failed its health check"
        elif now - created > timeout:
            why = "it did not boot in time"
        if why is not None:
            _delete(services, wid, uid, clouds[cloud_id], server_id, why, result)
            continue
        alive.setdefault((plan_id, cloud_id), []).append((wid, uid, state, created))

    for (plan_id, cloud_id), count in wanted.items():
        have = alive.get((plan_id, cloud_id), [])
        if servers.get(cloud_id) is None:
            continue  # the cloud did not answer
        surplus = len(have) - count
        # The surplus goes, the youngest first (the oldest are ready soonest, or are).
        for wid, uid, _state, _created in sorted(have, key=lambda h: h[3], reverse=True)[:max(0, surplus)]:
            row_server = next((m[5] for m in machines if m[0] == wid), None)
            _delete(services, wid, uid, clouds[cloud_id], row_server, "more than the plan keeps warm now", result)
        if (plan_id, cloud_id) in assigning:
            continue  # its taken machine is being given its owner: the refill waits for that
        for _ in range(max(0, -surplus)):
            started = _start(services, plan_id, cloud_id, clouds[cloud_id])
            if started is not None:
                result.started.append(started)
    # Pools of plans no longer warm (or disabled): their machines go.
    for (plan_id, cloud_id), have in alive.items():
        if (plan_id, cloud_id) not in wanted and servers.get(cloud_id) is not None:
            for wid, uid, _state, _created in have:
                row_server = next((m[5] for m in machines if m[0] == wid), None)
                _delete(services, wid, uid, clouds[cloud_id], row_server, "its plan keeps none warm", result)
    if result.started or result.ready or result.deleted:
        log.info("warm pools: started %s, ready %s, deleted %s", result.started, result.ready, result.deleted)
    return result


def _mark_ready(services: Services, wid: int, server: Server) -> bool:
    with services.database.unit_of_work() as s:
        row = s.get(WarmMachine, wid)
        if row is None or row.state != WarmState.BOOTING:
            return False
        _store(row, server)
        row.state, row.ready_at = WarmState.READY, services.clock.now()
        return True


def _delete(services: Services, wid: int, uid: str, cloud: str, server_id: str | None, why: str,
            result: PoolResult) -> None:
    """The row goes first, only while no create has taken it; then the server."""
    with services.database.unit_of_work() as s:
        gone = s.execute(delete(WarmMachine).where(WarmMachine.id == wid, WarmMachine.state.in_(LIVE)),
                         execution_options={"synchronize_session": False})
        if not gone.rowcount:  # type: ignore[attr-defined]
            return  # taken meanwhile: the instance's now
    log.warning("warm machine %s deleted: %s", uid, why)
    result.deleted[uid] = why
    if server_id:
        try:
            services.provider(cloud).delete(server_id)
        except CloudError as exc:  # the orphan clean-up deletes it later (no row knows it now)
            log.warning("warm machine %s: server %s not deleted: %s", uid, server_id, exc.message)


def _start(services: Services, plan_id: int, cloud_id: int, cloud: str) -> str | None:
    with services.database.unit_of_work() as s:
        row = WarmMachine(uid=secrets.token_hex(6), plan_id=plan_id, cloud_id=cloud_id, state=WarmState.BOOTING,
                          secret=secrets.token_urlsafe(24), provider_state={}, created_at=services.clock.now())
        s.add(row)
        s.flush()
        wid, uid = row.id, row.uid
        try:
            spec = _boot(services, s.get(Plan, plan_id), row)  # type: ignore[arg-type]
        except VisaError as exc:
            log.warning("warm machine of plan %s not started: %s", plan_id, exc.message)
            s.delete(row)
            return None
    try:
        server = services.provider(cloud).create(spec)
    except CloudError as exc:
        log.warning("warm machine %s not created: %s", uid, exc.message)
        with services.database.unit_of_work() as s:
            s.execute(delete(WarmMachine).where(WarmMachine.id == wid))
        return None
    with services.database.unit_of_work() as s:
        stored = s.get(WarmMachine, wid)
        if stored is not None:
            _store(stored, server)
    return uid
