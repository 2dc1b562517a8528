"""Carries out the commands users and the scheduler queue on instances.

Commands are claimed atomically (PENDING -> RUNNING: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
a conditional UPDATE on SQLite), so any number of processes may run the executor; the claimer
beats (``heartbeat_at``) while it runs them, and a command whose claimer stopped beating for
``command_missed_heartbeats`` beats is given back. Cloud calls happen outside database transactions; each
outcome is written in a short transaction of its own. Transient cloud failures are retried
with backoff; the rest mark the instance ERROR with a message the user can read.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Collection
from datetime import timedelta
from typing import TypeVar

from sqlalchemy import and_, delete, exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from visa.clouds.base import Server
from visa.clouds.retry import RetryPolicy
from visa.errors import CloudError, VisaError
from visa.instances.display import given_at_boot
from visa.instances.helper import HelperTarget
from visa.instances.models import (
    CommandAction,
    CommandState,
    Instance,
    InstanceCommand,
    InstanceState,
    WarmMachine,
    WarmState,
)
from visa.instances.spec import boot_spec, server_spec, site_for_instance
from visa.instances.warm import channel_of, target_of
from visa.network.service import STATE_KEY
from visa.provisioning.warm import assignment
from visa.services import Services
from visa.users.service import record_unix_account, unix_ids_in_use

log = logging.getLogger(__name__)
T = TypeVar("T")

# Which process runs a command (instance_commands.claimed_by), for its heartbeat and fencing.
PROCESS = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:128]
# Commands claimed in one round at most (then as many more as slots free up).
CLAIM_BATCH = 50
# Cloud states in which a machine may be deleted at once (no shutdown needed first).
DELETABLE = frozenset({InstanceState.STOPPED, InstanceState.ERROR, InstanceState.DELETED})


def with_retries(services: Services, call: Callable[[], T], what: str = "cloud call") -> T:
    """``call()`` under the retry policy: transient cloud failures tried again until the
    ``scheduler.cloud_call_seconds`` deadline (:mod:`visa.clouds.retry`)."""
    policy = RetryPolicy(deadline=services.settings.scheduler.cloud_call_seconds)
    return policy.run(call, what=what)


def stale_after(services: Services) -> timedelta:
    cfg = services.settings.scheduler
    return timedelta(seconds=cfg.command_heartbeat_seconds * cfg.command_missed_heartbeats)


def release_stale_claims(services: Services) -> int:
    """Give back commands whose process stopped beating while carrying them out (all our
    actions are idempotent); a process that still beats keeps its commands however long they take."""
    cutoff = services.clock.now() - stale_after(services)
    with services.database.unit_of_work() as s:
        result = s.execute(
            update(InstanceCommand)
            .where(
                InstanceCommand.state == CommandState.RUNNING,
                or_(InstanceCommand.heartbeat_at < cutoff,
                    and_(InstanceCommand.heartbeat_at.is_(None),
                         or_(InstanceCommand.claimed_at.is_(None), InstanceCommand.claimed_at < cutoff))),
            )
            .values(state=CommandState.PENDING, claimed_at=None, claimed_by=None, heartbeat_at=None),
            execution_options={"synchronize_session": False},
        )
        count = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if count:
        log.warning("released %d command(s) whose process stopped beating", count)
    return count


def heartbeat(services: Services, ids: Collection[int]) -> int:
    """Say this process still runs these commands; returns how many are still ours."""
    if not ids:
        return 0
    with services.database.unit_of_work() as s:
        result = s.execute(
            update(InstanceCommand)
            .where(InstanceCommand.id.in_(list(ids)), InstanceCommand.state == CommandState.RUNNING,
                   InstanceCommand.claimed_by == PROCESS)
            .values(heartbeat_at=services.clock.now()),
            execution_options={"synchronize_session": False},
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def claim_pending(services: Services, limit: int = 20, *, free: Callable[[int], int] | None = None,
                  full: Collection[int] = ()) -> list[tuple[int, int]]:
    """Claim up to ``limit`` pending commands for this process, as (command id, cloud id).

    ``free(cloud_id)``: slots this process has left for that cloud (``full``: those with none).
    On PostgreSQL the rows are locked with ``FOR UPDATE SKIP LOCKED``: processes claiming at
    the same time take different commands and never wait for each other. An instance's commands
    run one at a time, in order: none is claimed while an earlier one of its instance runs."""
    release_stale_claims(services)
    now = services.clock.now()
    other = aliased(InstanceCommand)
    earlier = exists().where(other.instance_id == InstanceCommand.instance_id, other.id < InstanceCommand.id,
                             other.state.in_([CommandState.PENDING, CommandState.RUNNING]))
    stmt = (
        select(InstanceCommand.id, InstanceCommand.instance_id, Instance.cloud_id)
        .join(Instance, Instance.id == InstanceCommand.instance_id)
        .where(InstanceCommand.state == CommandState.PENDING, ~earlier)
        .order_by(InstanceCommand.id).limit(limit)
    )
    if full:
        stmt = stmt.where(Instance.cloud_id.not_in(list(full)))
    taken: dict[int, int] = {}

    def pick(rows: list) -> list[tuple[int, int]]:
        out, seen = [], set()
        for cid, instance_id, cloud_id in rows:
            if instance_id in seen:
                continue
            seen.add(instance_id)
            if free is not None and free(cloud_id) - taken.get(cloud_id, 0) <= 0:
                continue
            taken[cloud_id] = taken.get(cloud_id, 0) + 1
            out.append((cid, cloud_id))
        return out

    values = {"state": CommandState.RUNNING, "claimed_at": now, "claimed_by": PROCESS, "heartbeat_at": now}
    if services.database.engine.dialect.name == "postgresql":
        with services.database.unit_of_work() as s:
            rows = s.execute(stmt.with_for_update(of=InstanceCommand, skip_locked=True)).all()
            claimed = pick(rows)
            if claimed:
                s.execute(update(InstanceCommand).where(InstanceCommand.id.in_([c for c, _ in claimed]))
                          .values(**values), execution_options={"synchronize_session": False})
        return claimed
    with services.database.unit_of_work() as s:
        rows = s.execute(stmt).all()
    claimed = []
    for cid, cloud_id in pick(rows):
        with services.database.unit_of_work() as s:
            result = s.execute(
                update(InstanceCommand)
                .where(InstanceCommand.id == cid, InstanceCommand.state == CommandState.PENDING)
                .values(**values), execution_options={"synchronize_session": False},
            )
            if result.rowcount:  # type: ignore[attr-defined]
                claimed.append((cid, cloud_id))
    return claimed


def run_one(services: Services, cid: int) -> None:
    """Carry out one claimed command; an unexpected error fails it, not the caller."""
    try:
        execute(services, cid)
    except Exception:  # one bad command must not stop the others
        log.exception("command %s failed unexpectedly", cid)
        _finish(services, cid, CommandState.FAILED, "internal error")


def run_pending_commands(services: Services, limit: int = 20) -> int:
    """Carry out pending commands one after the other, here; return how many were handled."""
    handled = 0
    for cid, _cloud in claim_pending(services, limit):
        run_one(services, cid)
        handled += 1
    return handled


def _finish(services: Services, cid: int, state: CommandState, message: str | None = None) -> None:
    with services.database.unit_of_work() as s:
        cmd = s.get(InstanceCommand, cid)
        if cmd is not None and cmd.state == CommandState.RUNNING and cmd.claimed_by not in (None, PROCESS):
            log.warning("command %s was given to %s meanwhile: its outcome is theirs to write", cid, cmd.claimed_by)
            return
        if cmd is not None:
            cmd.state = state
            cmd.message = message
            cmd.finished_at = services.clock.now()


def _fail_instance(services: Services, instance_id: int, message: str) -> None:
    with services.database.unit_of_work() as s:
        instance = s.get(Instance, instance_id)
        if instance is not None and instance.state != InstanceState.DELETING:
            instance.state = InstanceState.ERROR
            instance.error_message = message
            instance.state_changed_at = services.clock.now()


def store_server(instance: Instance, server: Server, now) -> None:
    """Remember where the machine is and how to reach it."""
    instance.cloud_server_id = server.id
    if server.address:
        instance.address = server.address
    state = dict(instance.provider_state or {})
    if server.ports:
        state["ports"] = dict(server.ports)
    if server.sockets:
        state["sockets"] = dict(server.sockets)
        state.pop("ports", None)
    if server.provider_state:
        state["cloud"] = server.provider_state
    instance.provider_state = state


def soft_delete(instance: Instance, now) -> None:
    instance.state = InstanceState.DELETED
    instance.deleted_at = now
    instance.state_changed_at = now


def execute(services: Services, cid: int) -> None:
    with services.database.unit_of_work() as s:
        cmd = s.get(InstanceCommand, cid)
        assert cmd is not None
        instance = s.get(Instance, cmd.instance_id)
        action = cmd.action
        if instance is None or instance.deleted_at is not None:
            cmd.state, cmd.finished_at = CommandState.DONE, services.clock.now()
            cmd.message = "instance already deleted"
            return
        cloud_name, server_id, instance_id = instance.cloud.name, instance.cloud_server_id, instance.id
        spec = None
        warm_id: int | None = None
        warm = s.scalar(select(WarmMachine).where(WarmMachine.instance_id == instance.id,
                                                  WarmMachine.state == WarmState.TAKEN))
        if action == CommandAction.CREATE and warm is not None and instance.state != InstanceState.DELETING:
            try:
                site = site_for_instance(instance, services.settings.provisioning)
                document = assignment(boot_spec(instance, now=services.clock.now(),
                                                open_data=instance.open_data_experiments), site=site)
            except VisaError as exc:
                instance.state, instance.error_message = InstanceState.ERROR, exc.message
                cmd.state, cmd.message, cmd.finished_at = CommandState.FAILED, exc.message, services.clock.now()
                return
            target = target_of(instance.uid, instance.address, instance.provider_state)
            warm_id = warm.id
        elif action == CommandAction.CREATE:
            if instance.state == InstanceState.DELETING or server_id:
                cmd.state, cmd.finished_at = CommandState.DONE, services.clock.now()
                cmd.message = "nothing to create"
                return
            try:
                _record_account(services, s, instance)
                spec = server_spec(instance, services.settings, services.clock.now(), _probe_key(services))
            except VisaError as exc:
                instance.state, instance.error_message = InstanceState.ERROR, exc.message
                cmd.state, cmd.message, cmd.finished_at = CommandState.FAILED, exc.message, services.clock.now()
                return

    provider = services.provider(cloud_name)
    log.info("instance %s: %s", instance_id, action.value)
    if warm_id is not None:
        _assign_warm(services, cid, instance_id, warm_id, target, document, cloud_name, server_id)
        return
    try:
        if action == CommandAction.CREATE:
            assert spec is not None
            server = with_retries(services, lambda: provider.create(spec), f"create on cloud {cloud_name}")
            with services.database.unit_of_work() as s:
                inst = s.get(Instance, instance_id)
                assert inst is not None
                store_server(inst, server, services.clock.now())
                given_at_boot(inst)
                # The groups the rules gave (the base group is the site's, never the rules' to take off).
                inst.provider_state = {**inst.provider_state, STATE_KEY: [
                    g for g in spec.security_groups if g != services.settings.network.base_group]}
                if inst.state == InstanceState.BUILDING and server.state == InstanceState.ERROR:
                    inst.state, inst.error_message = InstanceState.ERROR, server.fault or "the cloud failed to build it"
        elif server_id is None:
            if action == CommandAction.DELETE:
                with services.database.unit_of_work() as s:
                    inst = s.get(Instance, instance_id)
                    assert inst is not None
                    soft_delete(inst, services.clock.now())
            else:
                raise CloudError("the instance has no machine in the cloud yet")
        elif action == CommandAction.START:
            with_retries(services, lambda: provider.start(server_id), f"start on cloud {cloud_name}")
        elif action == CommandAction.STOP:
            with_retries(services, lambda: provider.stop(server_id), f"stop on cloud {cloud_name}")
        elif action == CommandAction.REBOOT:
            with_retries(services, lambda: provider.reboot(server_id), f"reboot on cloud {cloud_name}")
        elif action == CommandAction.DELETE:
            delete_gracefully(services, instance_id, server_id, cloud_name)
    except CloudError as exc:
        log.warning("instance %s: %s failed: %s", instance_id, action.value, exc.message)
        if action in (CommandAction.CREATE, CommandAction.START, CommandAction.REBOOT):
            _fail_instance(services, instance_id, exc.message)
        _finish(services, cid, CommandState.FAILED, exc.message)
        return
    _finish(services, cid, CommandState.DONE)


def _assign_warm(services: Services, cid: int, instance_id: int, warm_id: int, target: HelperTarget | None,
                 document: dict, cloud_name: str, server_id: str | None) -> None:
    """Give the warm machine the instance took its owner. It answers ok, or it is deleted and the
    instance is created as any other (in this same command): a machine that failed is never
    assigned again, and what it printed is never kept."""
    started = time.monotonic()
    ok = target is not None and channel_of(services)(target, document)
    took = time.monotonic() - started
    with services.database.unit_of_work() as s:
        s.execute(delete(WarmMachine).where(WarmMachine.id == warm_id))
        inst = s.get(Instance, instance_id)
        if ok and inst is not None:
            given_at_boot(inst)
        if not ok and inst is not None:
            log.warning("instance %s: its warm machine was not given its owner; deleted, creating another",
                        inst.uid)
            inst.cloud_server_id, inst.address, inst.provider_state = None, None, {}
    if ok:
        log.info("instance %s: warm machine given its owner in %.1f s", instance_id, took)
        _finish(services, cid, CommandState.DONE)
        return
    if server_id:
        try:
            services.provider(cloud_name).delete(server_id)
        except CloudError as exc:  # no row knows it now: the orphan clean-up deletes it later
            log.warning("instance %s: warm server %s not deleted: %s", instance_id, server_id, exc.message)
    execute(services, cid)


def _record_account(services: Services, session: Session, instance: Instance) -> None:
    """A cloud that runs sessions as accounts of visa's host makes only the account recorded as
    the owner's: one is planned and recorded here first, where none is. The unique columns
    settle a race with another process (which recorded it, or took the name or uid): planned again."""
    owner = instance.owner
    provider = services.provider(instance.cloud.name)
    for _attempt in range(3):
        if owner.unix_account is not None:
            return
        planned = provider.new_account(owner.username, owner.uid_number, *unix_ids_in_use(session, owner))
        if planned is None:
            return
        try:
            with session.begin_nested():
                record_unix_account(session, services.clock, owner, *planned)
            return
        except IntegrityError:
            session.refresh(owner)
    raise CloudError(f"no unix account could be recorded for {owner.username}: try again", transient=True)


def delete_gracefully(services: Services, instance_id: int, server_id: str, cloud_name: str) -> bool:
    """Shut down first, delete once stopped. Returns True when the machine is gone."""
    provider = services.provider(cloud_name)
    server = with_retries(services, lambda: provider.get(server_id), f"get on cloud {cloud_name}")
    if server is not None and server.state not in DELETABLE:
        with_retries(services, lambda: provider.stop(server_id), f"stop on cloud {cloud_name}")
        server = with_retries(services, lambda: provider.get(server_id), f"get on cloud {cloud_name}")
    if server is not None and server.state not in DELETABLE:
        return False  # the sync finishes the deletion once the cloud reports it stopped
    if server is not None:
        with_retries(services, lambda: provider.delete(server_id), f"delete on cloud {cloud_name}")
    with services.database.unit_of_work() as s:
        inst = s.get(Instance, instance_id)
        if inst is not None and inst.deleted_at is None:
            soft_delete(inst, services.clock.now())
    return True


def _probe_key(services: Services) -> str | None:
    """The public key of the activity probe, when that feature is configured."""
    configured = services.settings.provisioning.probe_public_key
    if configured:
        return configured
    try:
        from visa.instances.probe_keys import public_key  # type: ignore[import-not-found]
    except ImportError:
        return None
    return public_key(services.settings)  # type: ignore[no-any-return]
