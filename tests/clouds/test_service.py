"""Registering clouds and switching them on and off: the CLI and the admin side share these functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.factories import actor, make_user
from visa.actor import SYSTEM
from visa.audit.models import AuditEvent
from visa.clock import FrozenClock
from visa.clouds import service
from visa.clouds.models import Cloud
from visa.errors import Forbidden, InvalidInput, NotFound


def test_cli_registers_enables_and_disables(cli, tmp_path: Path) -> None:
    assert cli("init").exit_code == 0
    config = tmp_path / "cloud.json"
    config.write_text(json.dumps({"max_instances": 3}))
    assert cli("clouds", "add", "spare", "--kind", "local", "--config", str(config)).exit_code == 0
    listed = cli("clouds", "list").output
    assert any(line.split() == ["spare", "local", "enabled"] for line in listed.splitlines()), listed

    r = cli("clouds", "disable", "spare")
    assert r.exit_code == 0 and "cloud spare disabled" in r.output
    assert any(line.split() == ["spare", "local", "disabled"] for line in cli("clouds", "list").output.splitlines())
    assert cli("clouds", "enable", "spare").exit_code == 0
    assert any(line.split() == ["spare", "local", "enabled"] for line in cli("clouds", "list").output.splitlines())

    r = cli("clouds", "disable", "nowhere")
    assert r.exit_code == 1 and "no cloud 'nowhere'" in r.output and "Traceback" not in r.output
    r = cli("clouds", "add", "odd", "--kind", "no-such-kind")
    assert r.exit_code == 1 and "unknown cloud kind" in r.output


def test_register_audits_without_the_settings(db) -> None:
    clock = FrozenClock()
    with db.unit_of_work() as s:
        service.register_cloud(SYSTEM, s, clock, "remote", "local", {"password": {"env": "SECRET_VAR"}})
        service.set_cloud_enabled(SYSTEM, s, clock, "remote", False)
        service.set_cloud_enabled(SYSTEM, s, clock, "remote", False)  # no change, no second record
    with db.sessionmaker() as s:
        cloud = s.scalar(select(Cloud).where(Cloud.name == "remote"))
        assert cloud is not None and not cloud.enabled
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.target_id == "remote").order_by(AuditEvent.id)))
        assert [e.action for e in events] == ["cloud.register", "cloud.disable"]
        assert "SECRET_VAR" not in json.dumps([e.details for e in events])


def test_only_admins_and_the_system_manage_clouds(db) -> None:
    clock = FrozenClock()
    with db.unit_of_work() as s:
        who = actor(make_user(s, clock, "someone"), clock)
        with pytest.raises(Forbidden):
            service.register_cloud(who, s, clock, "mine", "local", {})
        with pytest.raises(NotFound):
            service.set_cloud_enabled(SYSTEM, s, clock, "absent", True)
        with pytest.raises(InvalidInput):
            service.register_cloud(SYSTEM, s, clock, "", "local", {})
