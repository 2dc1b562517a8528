"""Carries out the commands users and the scheduler queue on instances.

Commands are claimed atomically (PENDING -> RUNNING by a conditional UPDATE), so any number
of processes may run the executor. Cloud calls happen outside database transactions; each
outcome is written in a short transaction of its own. Transient cloud failures are retried
with backoff; the rest mark the instance ERROR with a message the user can read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from sqlalchemy import select, update

from visa.clouds.base import Server
from visa.errors import CloudError, VisaError
from visa.instances.models import CommandAction, CommandState, Instance, InstanceCommand, InstanceState
from visa.instances.spec import server_spec
from visa.services import Services

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRIES = 3
# A command still RUNNING this long after it was claimed was left by a process that died.
STALE_CLAIM = timedelta(minutes=10)
# Cloud states in which a machine may be deleted at once (no shutdown needed first).
DELETABLE = frozenset({InstanceState.STOPPED, InstanceState.ERROR, InstanceState.DELETED})


def with_retries(call: Callable[[], T], *, attempts: int = RETRIES, base_delay: float = 0.5) -> T:
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except CloudError as exc:
            if not exc.transient or attempt == attempts:
                raise
            delay = base_delay * 2 ** (attempt - 1)
            log.warning("transient cloud error (attempt %d/%d), retrying in %.1fs: %s", attempt, attempts, delay, exc)
            time.sleep(delay)
    raise AssertionError("unreachable")


def release_stale_claims(services: Services) -> int:
    """Give back commands whose process died while carrying them out (all our actions are idempotent)."""
    cutoff = services.clock.now() - STALE_CLAIM
    with services.database.unit_of_work() as s:
        result = s.execute(
            update(InstanceCommand)
            .where(
                InstanceCommand.state == CommandState.RUNNING,
                (InstanceCommand.claimed_at.is_(None)) | (InstanceCommand.claimed_at < cutoff),
            )
            .values(state=CommandState.PENDING, claimed_at=None)
        )
        count = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if count:
        log.warning("released %d command(s) left running by a process that died", count)
    return count


def claim_pending(services: Services, limit: int = 20) -> list[int]:
    """Claim up to ``limit`` pending commands for this process."""
    claimed: list[int] = []
    release_stale_claims(services)
    with services.database.unit_of_work() as s:
        ids = s.scalars(
            select(InstanceCommand.id).where(InstanceCommand.state == CommandState.PENDING)
            .order_by(InstanceCommand.id).limit(limit)
        ).all()
    for cid in ids:
        with services.database.unit_of_work() as s:
            result = s.execute(
                update(InstanceCommand)
                .where(InstanceCommand.id == cid, InstanceCommand.state == CommandState.PENDING)
                .values(state=CommandState.RUNNING, claimed_at=services.clock.now())
            )
            if result.rowcount:  # type: ignore[attr-defined]
                claimed.append(cid)
    return claimed


def run_pending_commands(services: Services, limit: int = 20) -> int:
    """Carry out pending commands; return how many were handled."""
    handled = 0
    for cid in claim_pending(services, limit):
        try:
            execute(services, cid)
        except Exception:  # one bad command must not stop the others
            log.exception("command %s failed unexpectedly", cid)
            _finish(services, cid, CommandState.FAILED, "internal error")
        handled += 1
    return handled


def _finish(services: Services, cid: int, state: CommandState, message: str | None = None) -> None:
    with services.database.unit_of_work() as s:
        cmd = s.get(InstanceCommand, cid)
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


def store_server(instance: Instance, server: Server, now) -> None:  # noqa: ANN001
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


def soft_delete(instance: Instance, now) -> None:  # noqa: ANN001
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
        if action == CommandAction.CREATE:
            if instance.state == InstanceState.DELETING or server_id:
                cmd.state, cmd.finished_at = CommandState.DONE, services.clock.now()
                cmd.message = "nothing to create"
                return
            try:
                spec = server_spec(instance, services.settings, services.clock.now(), _probe_key(services))
            except VisaError as exc:
                instance.state, instance.error_message = InstanceState.ERROR, exc.message
                cmd.state, cmd.message, cmd.finished_at = CommandState.FAILED, exc.message, services.clock.now()
                return

    provider = services.provider(cloud_name)
    log.info("instance %s: %s", instance_id, action.value)
    try:
        if action == CommandAction.CREATE:
            assert spec is not None
            server = with_retries(lambda: provider.create(spec))
            with services.database.unit_of_work() as s:
                inst = s.get(Instance, instance_id)
                assert inst is not None
                store_server(inst, server, services.clock.now())
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
            with_retries(lambda: provider.start(server_id))
        elif action == CommandAction.STOP:
            with_retries(lambda: provider.stop(server_id))
        elif action == CommandAction.REBOOT:
            with_retries(lambda: provider.reboot(server_id))
        elif action == CommandAction.DELETE:
            delete_gracefully(services, instance_id, server_id, cloud_name)
    except CloudError as exc:
        log.warning("instance %s: %s failed: %s", instance_id, action.value, exc.message)
        if action in (CommandAction.CREATE, CommandAction.START, CommandAction.REBOOT):
            _fail_instance(services, instance_id, exc.message)
        _finish(services, cid, CommandState.FAILED, exc.message)
        return
    _finish(services, cid, CommandState.DONE)


def delete_gracefully(services: Services, instance_id: int, server_id: str, cloud_name: str) -> bool:
    """Shut down first, delete once stopped. Returns True when the machine is gone."""
    provider = services.provider(cloud_name)
    server = with_retries(lambda: provider.get(server_id))
    if server is not None and server.state not in DELETABLE:
        with_retries(lambda: provider.stop(server_id))
        server = with_retries(lambda: provider.get(server_id))
    if server is not None and server.state not in DELETABLE:
        return False  # the sync finishes the deletion once the cloud reports it stopped
    if server is not None:
        with_retries(lambda: provider.delete(server_id))
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
