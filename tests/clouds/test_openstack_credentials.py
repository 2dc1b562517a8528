"""OpenStack as its operators hand it out, on the sandbox's real Keystone: an application
credential, given directly or through a clouds.yaml entry, registered with the clouds service;
machines made and deleted with it; the credential rotated (a new one, the old one deleted) and the
next machine made by the same running visa (the same Services object: no restart)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.clouds.conftest import Credentials, sandbox_catalogue
from tests.factories import actor, make_experiment, make_plan, make_user
from visa.actor import SYSTEM
from visa.clouds.base import ServerSpec
from visa.clouds.openstack import OpenStackProvider
from visa.clouds.service import register_cloud
from visa.commands.executor import run_pending_commands
from visa.commands.sync import sync_cloud
from visa.db import Database
from visa.errors import CloudError
from visa.instances import service
from visa.instances.models import CommandAction, Instance, InstanceState
from visa.instances.schemas import CreateInstance
from visa.services import Services
from visa.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

CLOUD = "appcred"


def _wait(what: str, check: Callable[[], bool], seconds: float = 300, step: Callable[[], None] | None = None) -> None:
    # Nova's fake driver is quick, but its conductor and scheduler share a busy 2-core machine.
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {seconds:g} s"
        if step is not None:
            step()
        time.sleep(1)


def _instance(db: Database, uid: str) -> Instance:
    with db.sessionmaker() as s:
        found = s.scalar(select(Instance).where(Instance.uid == uid))
        assert found is not None
        return found


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)  # the sandbox needs PostgreSQL anyway
def test_an_application_credential_is_used_and_rotated_without_a_restart(
    openstack_sandbox: dict[str, Any], application_credentials: Credentials, db: Database, clock, tmp_path: Path,
    run_prefix: str,
) -> None:
    prefix = f"{run_prefix}rotate-"
    settings = Settings(data_dir=tmp_path / "data", database_url=db.url, secret_key="k",
                        instance_name_prefix=prefix.rstrip("-"))
    services = Services(settings=settings, database=db, clock=clock)
    visa_keys = {"network": openstack_sandbox["network"], "security_groups": openstack_sandbox["security_groups"],
                 "name_prefix": prefix}
    first = application_credentials.new("first")
    with db.unit_of_work() as s:
        cloud = register_cloud(SYSTEM, s, clock, CLOUD, "openstack", application_credentials.config(first, **visa_keys))
        image, flavour = sandbox_catalogue(s, cloud.id)
        alice = make_user(s, clock, "alice")
        experiment = make_experiment(s, members=[alice], proposal="ev280", instrument="id21")
        plan_id, alice_id, experiment_id = make_plan(s, image, flavour).id, alice.id, experiment.id

    def create(name: str) -> str:
        with db.unit_of_work() as s:
            owner = s.get(type(alice), alice_id)
            inst = service.create_instance(actor(owner, clock), s, clock, settings, CreateInstance(
                name=name, plan_id=plan_id, experiment_ids=[experiment_id], screen_width=1024, screen_height=768))
            uid = inst.uid
        assert run_pending_commands(services) == 1
        made = _instance(db, uid)
        assert made.cloud_server_id and made.state != InstanceState.ERROR, made.error_message
        return uid

    def synced() -> None:
        sync_cloud(services, CLOUD, probe_timeout=0.2)

    one = create("one")
    used = services.provider(CLOUD)

    # Rotation: a new credential registered, as `visa clouds add` on the same name does, the old one deleted.
    second = application_credentials.new("second")
    with db.unit_of_work() as s:
        register_cloud(SYSTEM, s, clock, CLOUD, "openstack", application_credentials.config(second, **visa_keys))
    application_credentials.delete(first)
    stale = OpenStackProvider("stale", application_credentials.config(first, **visa_keys))
    with pytest.raises(CloudError) as info:  # Keystone no longer knows it
        stale.list_servers()
    assert info.value.details["reason"] == "auth" and not info.value.transient
    stale.close()

    two = create("two")
    assert services.provider(CLOUD) is not used  # the same Services, a new provider
    _wait("both machines running", lambda: all(
        _instance(db, uid).state not in (InstanceState.BUILDING,) for uid in (one, two)), step=synced)

    # Both deleted with the new credential (stopped first, then deleted once the cloud says stopped).
    for uid in (one, two):
        with db.unit_of_work() as s:
            inst = s.scalar(select(Instance).where(Instance.uid == uid))
            service.request_action(actor(inst.owner, clock), s, clock, inst, CommandAction.DELETE)
    assert run_pending_commands(services) == 2
    _wait("both machines deleted", lambda: all(_instance(db, uid).deleted_at is not None for uid in (one, two)),
          step=synced)
    _wait("the cloud has none left", lambda: not [
        srv for srv in services.provider(CLOUD).list_servers() if srv.name.startswith(prefix)])
    services.close()


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_a_clouds_yaml_entry_edited_in_place_takes_effect_without_a_restart(
    openstack_sandbox: dict[str, Any], application_credentials: Credentials, db: Database, clock, tmp_path: Path,
    run_prefix: str,
) -> None:
    prefix = f"{run_prefix}yaml-"
    clouds_yaml = tmp_path / "clouds.yaml"

    def write_entry(cred: Any) -> None:
        entry = {"auth_type": "v3applicationcredential", "region_name": "RegionOne", "interface": "public",
                 "auth": {"auth_url": application_credentials.auth_url, "application_credential_id": cred.id,
                          "application_credential_secret": cred.secret}}
        clouds_yaml.write_text(json.dumps({"clouds": {"facility": entry}}, indent=2))  # JSON is YAML

    first = application_credentials.new("yaml")
    write_entry(first)
    settings = Settings(data_dir=tmp_path / "data", database_url=db.url, secret_key="k")
    services = Services(settings=settings, database=db, clock=clock)
    with db.unit_of_work() as s:
        register_cloud(SYSTEM, s, clock, "facility", "openstack",
                       {"cloud": "facility", "clouds_yaml": str(clouds_yaml), "network": openstack_sandbox["network"],
                        "name_prefix": prefix})
    provider = services.provider("facility")
    server = provider.create(ServerSpec(name="yaml", instance_uid="yaml1", image_ref="visa-sandbox-image",
                                        flavour_ref="visa.tiny", user_data="", secret="s"))
    _wait("the server running", lambda: (got := provider.get(server.id)) is not None
          and got.state != InstanceState.BUILDING)

    second = application_credentials.new("yaml-rotated")
    write_entry(second)
    application_credentials.delete(first)
    rotated = services.provider("facility")
    assert rotated is not provider
    rotated.delete(server.id)
    _wait("the server deleted", lambda: rotated.get(server.id) is None)
    services.close()
