"""Network rules on the OpenStack sandbox's real Nova and Neutron (fake hypervisor), on a frozen clock:
a server gets the rules' groups at create, gains an instrument's group when its experiment's beamtime
starts and loses it when it ends, gains and loses a role's group with the role; each change is in the
audit log. And the base group: visa reports a missing or too-open one and makes it right."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.clouds.conftest import sandbox_catalogue
from tests.factories import actor, make_experiment, make_plan, make_user
from visa.actor import SYSTEM
from visa.audit.models import AuditEvent
from visa.catalogue.service import apply_files
from visa.clock import FrozenClock
from visa.clouds.models import Cloud
from visa.clouds.openstack import OpenStackProvider
from visa.commands.executor import run_pending_commands
from visa.db import Database
from visa.instances import service
from visa.instances.models import Instance, InstanceState
from visa.instances.schemas import CreateInstance
from visa.network import jobs as network
from visa.services import Services
from visa.settings import NetworkSettings, Settings
from visa.users.models import Role, User
from visa.users.service import grant_role, revoke_role

pytestmark = pytest.mark.integration

RULES = """\
- name: everyone
  security_groups: [{p}licences]
- name: staff
  roles: [STAFF]
  security_groups: [{p}staff-net]
- name: id21-control
  instruments: [id21]
  beamtime: true
  security_groups: [{p}id21-control]
"""


@pytest.fixture
def groups(make_provider) -> Iterator[tuple[str, OpenStackProvider]]:
    """The rules' security groups, made in the sandbox's project for this test and deleted after it."""
    prefix = make_provider.prefix
    provider = make_provider()
    net = provider.conn.network
    made = [net.create_security_group(name=f"{prefix}{n}") for n in ("licences", "staff-net", "id21-control")]
    yield prefix, provider
    for server in provider.list_servers():  # a group in use cannot go: its servers first
        if server.name.startswith(prefix):
            provider.delete(server.id)
    for sg in made:
        for _ in range(30):  # Nova frees the ports a moment after the delete
            try:
                net.delete_security_group(sg, ignore_missing=True)
                break
            except Exception:
                time.sleep(1)


@pytest.fixture
def world(tmp_path: Path, db: Database, openstack_sandbox: dict[str, Any], groups) -> Iterator:
    prefix, provider = groups
    clock = FrozenClock(datetime(2026, 3, 1, 12, tzinfo=UTC))
    settings = Settings(data_dir=tmp_path / "data", database_url=db.url, secret_key="k",
                        instance_name_prefix=prefix.rstrip("-"))
    services = Services(settings=settings, database=db, clock=clock)
    services.set_provider("sandbox", provider)  # the fixture's: it deletes the test's servers
    rules = tmp_path / "network-rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(RULES.format(p=prefix))
    with db.unit_of_work() as s:
        cloud = Cloud(name="sandbox", kind="openstack", enabled=True, created_at=clock.now(),
                      config={**openstack_sandbox, "name_prefix": prefix})
        s.add(cloud)
        s.flush()
        image, flavour = sandbox_catalogue(s, cloud.id)
        apply_files(SYSTEM, s, clock, [rules])
        alice = make_user(s, clock, "alice")
        # Beamtime on id21 from 2 to 5 March (inclusive).
        exp = make_experiment(s, members=[alice], proposal="ev281", instrument="id21", start=date(2026, 3, 2))
        plan = make_plan(s, image, flavour)
        inst = service.create_instance(
            actor(alice, clock), s, clock, settings,
            CreateInstance(name="beamline", plan_id=plan.id, experiment_ids=[exp.id], screen_width=1024,
                           screen_height=768),
        )
        uid = inst.uid
    yield services, uid, prefix
    services.close()


def _server_groups(services: Services, uid: str) -> set[str]:
    with services.database.sessionmaker() as s:
        server_id = s.scalar(select(Instance.cloud_server_id).where(Instance.uid == uid))
    found = services.provider("sandbox").server_security_groups(server_id)
    assert found is not None
    return found


def _running(services: Services, uid: str) -> None:
    """Wait for Nova to run the server, then take it as running (the fake hypervisor's desktop never answers)."""
    with services.database.sessionmaker() as s:
        server_id = s.scalar(select(Instance.cloud_server_id).where(Instance.uid == uid))
    deadline = time.monotonic() + 300  # the sandbox shares a busy 2-core machine
    while (server := services.provider("sandbox").get(server_id)) is not None and server.state != InstanceState.ACTIVE:
        assert time.monotonic() < deadline, server
        time.sleep(1)
    with services.database.unit_of_work() as s:
        s.scalar(select(Instance).where(Instance.uid == uid)).state = InstanceState.ACTIVE


def _changes(result: network.NetworkResult) -> list[tuple[str, bool]]:
    assert not result.failed and not result.skipped_clouds, (result.failed, result.skipped_clouds)
    return [(c.group, c.add) for c in result.applied]


def _audit(db: Database, uid: str) -> list[tuple[str, str, list[str]]]:
    with db.sessionmaker() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.target_id == uid, AuditEvent.action.startswith(
            "instance.network.")).order_by(AuditEvent.id))
        return [(e.action, e.details["group"], e.details["rules"]) for e in events]


def _set_role(services: Services, grant: bool) -> None:
    with services.database.unit_of_work() as s:
        alice = s.scalar(select(User).where(User.username == "alice"))
        if grant:
            grant_role(SYSTEM, s, services.clock, alice, Role.STAFF)
        else:
            revoke_role(SYSTEM, s, services.clock, alice, Role.STAFF)


def test_groups_follow_beamtime_and_roles(world) -> None:
    services, uid, p = world
    clock: FrozenClock = services.clock  # type: ignore[assignment]
    # At create, before the beamtime: the cloud's own group and the rule for everyone.
    assert run_pending_commands(services) == 1
    _running(services, uid)
    assert _server_groups(services, uid) == {"default", f"{p}licences"}
    assert _changes(network.run(services)) == []

    clock.set(datetime(2026, 3, 2, 0, 5, tzinfo=UTC))  # the beamtime starts
    assert _changes(network.run(services)) == [(f"{p}id21-control", True)]
    assert _server_groups(services, uid) == {"default", f"{p}licences", f"{p}id21-control"}
    assert _changes(network.run(services)) == []  # nothing more to do: no call made

    _set_role(services, grant=True)
    assert _changes(network.run(services)) == [(f"{p}staff-net", True)]
    _set_role(services, grant=False)
    assert _changes(network.run(services)) == [(f"{p}staff-net", False)]

    clock.set(datetime(2026, 3, 5, 23, 55, tzinfo=UTC))
    assert _changes(network.run(services)) == []  # the last day still counts
    clock.set(datetime(2026, 3, 6, 0, 5, tzinfo=UTC))  # it has ended
    assert _changes(network.run(services)) == [(f"{p}id21-control", False)]
    assert _server_groups(services, uid) == {"default", f"{p}licences"}

    assert _audit(services.database, uid) == [
        ("instance.network.add", f"{p}id21-control", ["id21-control"]),
        ("instance.network.add", f"{p}staff-net", ["staff"]),
        ("instance.network.remove", f"{p}staff-net", []),
        ("instance.network.remove", f"{p}id21-control", []),
    ]


def test_base_group_reported_then_made_right(cli, groups, openstack_sandbox: dict[str, Any], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    prefix, provider = groups
    name = f"{prefix}base"
    config = tmp_path / "sandbox.json"
    config.write_text(json.dumps(openstack_sandbox))
    assert cli("clouds", "add", "sandbox", "--kind", "openstack", "--config", str(config)).exit_code == 0
    monkeypatch.setenv("VISA_NETWORK__BASE_GROUP", name)
    monkeypatch.setenv("VISA_NETWORK__ACCESS_FROM", '["127.0.0.1", "10.11.0.0/24"]')
    try:
        missing = cli("clouds", "secure-network", "sandbox")
        assert missing.exit_code == 1
        assert f"security group {name!r} is missing (create it with --create)" in missing.output

        made = cli("clouds", "secure-network", "sandbox", "--create", "--json")
        assert made.exit_code == 0, made.output
        report = json.loads(made.output)
        assert report["ports"] == [22] and report["sources"] == ["127.0.0.1", "10.11.0.0/24"]
        assert report["lines"] == [f"created security group {name!r}", "added rule: TCP 22 from 10.11.0.0/24",
                                   "added rule: TCP 22 from 127.0.0.1/32"]
        assert cli("clouds", "secure-network", "sandbox").exit_code == 0

        # Someone opens the desktop to the world: reported, then taken away.
        sg = next(provider.conn.network.security_groups(name=name))
        provider.conn.network.create_security_group_rule(
            security_group_id=sg.id, direction="ingress", protocol="tcp", port_range_min=5901, port_range_max=5901,
            remote_ip_prefix="0.0.0.0/0", ethertype="IPv4")
        open_ = cli("clouds", "secure-network", "sandbox")
        assert open_.exit_code == 1
        assert f"security group {name!r} is too open: TCP port 5901 from 0.0.0.0/0" in open_.output
        fixed = cli("clouds", "secure-network", "sandbox", "--create")
        assert "deleted rule (too open: TCP port 5901 from 0.0.0.0/0)" in fixed.output
        assert cli("clouds", "secure-network", "sandbox").exit_code == 0
    finally:
        for sg in provider.conn.network.security_groups(name=name):
            provider.conn.network.delete_security_group(sg)


def test_local_cloud_reports_it_has_no_security_groups() -> None:
    from visa.clouds.local import LocalProvider

    provider = LocalProvider.__new__(LocalProvider)  # no host state needed to answer this
    provider.name = "local"
    assert provider.server_security_groups("any") is None
    assert "has no security groups" in provider.base_group_report("visa-base", [22], ["127.0.0.1"])[0]
    assert NetworkSettings(access_from=["10.0.0.1"]).access_from == ["10.0.0.1"]
