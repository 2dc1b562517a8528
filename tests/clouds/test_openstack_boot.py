"""A machine the cloud runs but whose desktop never answers ends in ERROR with a message the
user and the administrators can act on, instead of STARTING for ever.

The OpenStack sandbox's fake hypervisor is exactly that machine: Nova reports it ACTIVE, and
nothing ever listens at its (loopback, 127.100.x) address.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.clouds.conftest import sandbox_catalogue
from tests.factories import actor, make_experiment, make_plan, make_user
from visa.clouds.models import Cloud
from visa.commands.executor import run_pending_commands
from visa.commands.sync import sync_cloud
from visa.db import Database
from visa.instances import service
from visa.instances.models import CommandAction, Instance, InstanceState
from visa.instances.schemas import CreateInstance
from visa.provisioning import report
from visa.services import Services
from visa.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def on_sandbox(tmp_path: Path, db: Database, clock, openstack_sandbox: dict[str, Any], make_provider) -> Iterator:
    settings = Settings(data_dir=tmp_path / "data", database_url=db.url, secret_key="k",
                        instance_name_prefix=make_provider.prefix.rstrip("-"))
    services = Services(settings=settings, database=db, clock=clock)
    with db.unit_of_work() as s:
        cloud = Cloud(name="sandbox", kind="openstack", enabled=True, created_at=clock.now(),
                      config={**openstack_sandbox, "name_prefix": make_provider.prefix})
        s.add(cloud)
        s.flush()
        image, flavour = sandbox_catalogue(s, cloud.id)
        alice = make_user(s, clock, "alice")
        exp = make_experiment(s, members=[alice], proposal="ev280", instrument="id21")
        plan = make_plan(s, image, flavour)
        inst = service.create_instance(
            actor(alice, clock), s, clock, settings,
            CreateInstance(name="silent", plan_id=plan.id, experiment_ids=[exp.id], screen_width=1024,
                           screen_height=768),
        )
        uid = inst.uid
    yield services, uid
    services.close()


def _state(db: Database, uid: str) -> Instance:
    with db.sessionmaker() as s:
        return s.scalar(select(Instance).where(Instance.uid == uid))


def _sync_until_cloud_active(services: Services, uid: str) -> Instance:
    import time

    # Nova's fake driver is quick, but its conductor and scheduler share a busy 2-core machine.
    deadline = time.monotonic() + 300
    while True:
        sync_cloud(services, "sandbox", probe_timeout=0.5)
        inst = _state(services.database, uid)
        if inst.state != InstanceState.BUILDING or time.monotonic() > deadline:
            return inst
        time.sleep(1)


def test_a_desktop_that_never_answers_ends_in_error_not_starting(on_sandbox) -> None:
    services, uid = on_sandbox
    timeout = services.settings.provisioning.boot_timeout_seconds
    assert run_pending_commands(services) == 1
    inst = _sync_until_cloud_active(services, uid)
    assert inst.state == InstanceState.STARTING, inst.error_message  # the cloud runs it, the desktop is silent
    # Nova's console output (the fake hypervisor's is a fixed text) says nothing failed.
    provider = services.provider("sandbox")
    console = provider.boot_report(inst.cloud_server_id)
    assert isinstance(console, str) and console and report.failures(console) == []
    assert provider.boot_report("00000000-0000-0000-0000-000000000000") is None  # no such server
    services.clock.advance(seconds=timeout - 30)
    sync_cloud(services, "sandbox", probe_timeout=0.5)
    assert _state(services.database, uid).state == InstanceState.STARTING  # booting may take this long

    services.clock.advance(seconds=60)
    sync_cloud(services, "sandbox", probe_timeout=0.5)
    inst = _state(services.database, uid)
    assert inst.state == InstanceState.ERROR
    assert "desktop did not answer within 20 minutes" in inst.error_message and "console log" in inst.error_message
    # It stays there (no flapping back to STARTING), and the owner can still delete it.
    services.clock.advance(minutes=5)
    sync_cloud(services, "sandbox", probe_timeout=0.5)
    assert _state(services.database, uid).state == InstanceState.ERROR
    with services.database.unit_of_work() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == uid))
        service.request_action(actor(inst.owner, services.clock), s, services.clock, inst, CommandAction.DELETE)
    assert run_pending_commands(services) == 1
