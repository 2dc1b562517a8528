"""Warm pools on the OpenStack sandbox (fake hypervisor), on SQLite and PostgreSQL: the pool asks
the cloud for its machines, a create takes a ready one, the pool refills; a machine that fails its
health check is deleted, never assigned; one that refuses its owner is replaced by a cold create.

The fake hypervisor's servers are ACTIVE with no machine behind them, so the assignment helper's
channel is a double here (what it was asked, what it answers); the real helper runs on a real VM
in tests/clouds/test_real_vm.py and over a real sshd in tests/instances/test_warm_helper_ssh.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.clouds.conftest import make_provider, openstack_sandbox, run_prefix, sandbox_catalogue  # noqa: F401 (fixtures)
from tests.factories import actor, make_experiment, make_plan, make_user
from visa.clouds.models import Cloud
from visa.commands.executor import run_pending_commands
from visa.db import Database
from visa.instances import service, warm
from visa.instances.helper import HelperTarget
from visa.instances.models import CommandState, Instance, InstanceCommand, WarmMachine, WarmState
from visa.instances.schemas import CreateInstance
from visa.services import Services
from visa.settings import Settings

pytestmark = pytest.mark.integration


class Channel:
    """The helper as the tests say it answers; every call recorded as (verb, uid, document)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.healthy = True
        self.takes_owner = True

    def __call__(self, target: HelperTarget, document: dict[str, Any]) -> bool:
        self.calls.append((document["verb"], target.uid, document))
        return self.healthy if document["verb"] == "check" else self.takes_owner


@pytest.fixture
def pool(tmp_path: Path, db: Database, clock, openstack_sandbox: dict[str, Any],  # noqa: F811 (fixtures)
         make_provider) -> Iterator[Any]:  # noqa: F811
    settings = Settings(data_dir=tmp_path / "data", database_url=db.url, secret_key="k",
                        instance_name_prefix=make_provider.prefix.rstrip("-"))
    channel = Channel()
    services = Services(settings=settings, database=db, clock=clock, warm_channel=channel)
    with db.unit_of_work() as s:
        cloud = Cloud(name="sandbox", kind="openstack", enabled=True, created_at=clock.now(),
                      config={**openstack_sandbox, "name_prefix": make_provider.prefix})
        s.add(cloud)
        s.flush()
        image, flavour = sandbox_catalogue(s, cloud.id)
        alice = make_user(s, clock, "alice", uid_number=21001, gid_number=21001)
        exp = make_experiment(s, members=[alice], proposal="ev280", instrument="id21")
        plan = make_plan(s, image, flavour)
        plan.warm = [{"from": "00:00", "to": "24:00", "count": 1}]
        ids = {"alice": alice.id, "exp": exp.id, "plan": plan.id}

    def create() -> str:
        with db.unit_of_work() as s:
            owner = s.get(type(alice), ids["alice"])
            return service.create_instance(
                actor(owner, clock), s, clock, settings,
                CreateInstance(name="analysis", plan_id=ids["plan"], experiment_ids=[ids["exp"]]),
            ).uid

    yield services, channel, create
    services.close()


def _servers(services: Services) -> dict[str, Any]:
    """The cloud's servers by the uid visa tagged them with."""
    return {s.instance_uid: s for s in services.provider("sandbox").list_servers()}


def _until_ready(services: Services, uid: str) -> None:
    # The fake hypervisor is quick, but its conductor and scheduler share a busy 2-core machine.
    deadline = time.monotonic() + 300
    while uid not in warm.run(services).ready:
        assert time.monotonic() < deadline, "the warm machine never became ready"
        time.sleep(1)


def _rows(db: Database) -> list[tuple[str, WarmState]]:
    with db.sessionmaker() as s:
        return [(w.uid, w.state) for w in s.scalars(select(WarmMachine).order_by(WarmMachine.id))]


def test_a_create_takes_the_warm_machine_and_the_pool_refills(pool) -> None:
    services, channel, create = pool
    first = warm.run(services).started
    assert len(first) == 1 and first[0] in _servers(services)  # the cloud was asked for it
    assert warm.run(services).started == []  # the pool is full while it boots
    _until_ready(services, first[0])
    assert channel.calls[-1][:2] == ("check", first[0])

    uid = create()
    assert uid == first[0]  # the instance is the warm machine: its uid, server and host key
    with services.database.sessionmaker() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == uid))
        assert inst.cloud_server_id == _servers(services)[uid].id
    assert _rows(services.database) == [(uid, WarmState.TAKEN)]
    # No refill boots while the machine is given its owner (on the same hypervisor it would slow that).
    assert warm.run(services).started == []

    assert run_pending_commands(services) == 1
    verb, target, document = channel.calls[-1]
    assert (verb, target) == ("assign", uid)
    assert (document["username"], document["uid"], document["gid"]) == ("alice", 21001, 21001)
    assert [m["target"] for m in document["mounts"]] == ["/data/visitor/ev280/id21", "/data/processed/ev280/id21"]
    with services.database.sessionmaker() as s:
        command = s.scalar(select(InstanceCommand).join(Instance).where(Instance.uid == uid))
        assert command.state == CommandState.DONE
    assert _rows(services.database) == []  # never back in a pool

    refill = warm.run(services).started  # a new one, in the background; not waited for
    assert len(refill) == 1 and refill[0] != uid and refill[0] in _servers(services)


def test_a_machine_that_fails_its_health_check_is_deleted_and_one_that_refuses_its_owner_is_replaced(pool) -> None:
    services, channel, create = pool
    sick = warm.run(services).started[0]
    _until_ready(services, sick)
    channel.healthy = False
    result = warm.run(services)
    assert result.deleted == {sick: "it failed its health check"}
    servers = _servers(services)
    assert sick not in servers or servers[sick].state.value in ("DELETING", "DELETED")
    assert sick not in [u for u, _ in _rows(services.database)]
    replacement = result.started[0]  # the same cycle starts another

    channel.healthy, channel.takes_owner = True, False
    _until_ready(services, replacement)
    warm_server = _servers(services)[replacement].id
    uid = create()
    assert uid == replacement
    run_pending_commands(services)
    # It did not answer ok: deleted, and the instance created as any other, on a new server.
    assert [c[0] for c in channel.calls if c[1] == uid][-1] == "assign"
    servers = {s.id: s for s in services.provider("sandbox").list_servers()}
    assert warm_server not in servers or servers[warm_server].state.value in ("DELETING", "DELETED")
    with services.database.sessionmaker() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == uid))
        assert inst.cloud_server_id not in (None, warm_server) and inst.error_message is None
        assert servers[inst.cloud_server_id].name.endswith(f"-{inst.id}")
        command = s.scalar(select(InstanceCommand).where(InstanceCommand.instance_id == inst.id))
        assert command.state == CommandState.DONE and command.message is None
    assert _rows(services.database) == []
