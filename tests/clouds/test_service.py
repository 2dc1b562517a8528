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
from visa.provisioning.site import cloud_check
from visa.settings import ProvisioningSettings


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


BAD_OVERRIDES = [
    ({"raw_mount_templat": "/srv/{proposal}"}, "config.provisioning.raw_mount_templat", "Extra inputs"),
    ({"mount_type": "smb"}, "config.provisioning.mount_type", "nfs, ceph or bind"),
    ({"cvmfs_quota_mb": "lots"}, "config.provisioning.cvmfs_quota_mb", "integer"),
    ({"raw_mount_template": "/srv/{user}"}, "config.provisioning.raw_mount_template", "{proposal}"),
    ({"home_mount_template": "/srv/{username}/..", "home_mount_root": "/srv"},
     "config.provisioning.home_mount_template", "outside home_mount_root"),
]


@pytest.mark.parametrize("override, field, message", BAD_OVERRIDES)
def test_a_bad_provisioning_override_is_refused_when_the_cloud_is_added(
    db, override: dict, field: str, message: str,
) -> None:
    """A cloud's provisioning settings get the site settings' checks at registration, a
    misspelt key included (it would leave the site's value in force, silently)."""
    clock = FrozenClock()
    with db.unit_of_work() as s, pytest.raises(InvalidInput) as refused:
        service.register_cloud(SYSTEM, s, clock, "remote", "local", {"provisioning": override},
                               check_site=cloud_check(ProvisioningSettings()))
    assert refused.value.field == field and message in refused.value.message
    with db.sessionmaker() as s:
        assert s.scalar(select(Cloud).where(Cloud.name == "remote")) is None


def test_cli_names_the_bad_override_and_stores_nothing(cli, tmp_path: Path) -> None:
    assert cli("init").exit_code == 0
    config = tmp_path / "cloud.json"
    config.write_text(json.dumps({"provisioning": {"mount_type": "bind", "raw_mount_templat": "/srv/{proposal}"}}))
    r = cli("clouds", "add", "typo", "--kind", "local", "--config", str(config))
    assert r.exit_code == 1 and f"{config}: config.provisioning.raw_mount_templat" in r.stderr
    assert "typo" not in cli("clouds", "list").output


def test_a_stored_bad_override_is_not_rendered() -> None:
    """A row stored before its checks (or edited in the database) is checked again at render."""
    from visa.provisioning.site import site_for_cloud

    assert site_for_cloud({"provisioning": {"mount_type": "bind"}}, ProvisioningSettings()).mount_type == "bind"
    for override, field, message in BAD_OVERRIDES:
        with pytest.raises(InvalidInput) as refused:
            site_for_cloud({"provisioning": override}, ProvisioningSettings())
        assert refused.value.field == field and message in refused.value.message


def test_the_site_settings_refuse_a_misspelt_provisioning_key() -> None:
    from pydantic import ValidationError

    from visa.settings import Settings

    with pytest.raises(ValidationError, match="raw_mount_templat"):
        Settings(secret_key="x", provisioning={"raw_mount_templat": "/srv/{proposal}"})
