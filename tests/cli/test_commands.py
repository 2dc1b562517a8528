"""The command line on both databases: clear messages and exit status 1 on bad input, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from visa.cli import main
from visa.db import Database
from visa.settings import get_settings
from visa.users.models import User

ROOT = Path(__file__).resolve().parents[2]


def test_init_catalogue_experiments_and_users(cli, db: Database, tmp_path: Path) -> None:
    assert cli("init").exit_code == 0
    r = cli("catalogue", "apply", "--dry-run", str(ROOT / "flavours"), str(ROOT / "images"))
    assert r.exit_code == 0 and "+ flavour esrf.medium" in r.output and "dry run" in r.output
    r = cli("catalogue", "apply", str(ROOT / "flavours"), str(ROOT / "images"))
    assert r.exit_code == 0 and "+ plan desktop/esrf.medium (preset)" in r.output
    assert cli("catalogue", "apply", str(ROOT / "flavours"), str(ROOT / "images")).output.strip() == "no changes"
    r = cli("experiments", "import", str(ROOT / "deploy/demo/experiments.json"))
    assert r.exit_code == 0 and "3 experiments created" in r.output
    assert cli("users", "add", "dora", "--full-name", "Dora", "--quota", "3", "--role", "staff").exit_code == 0
    r = cli("users", "grant", "dora", "GUEST")
    assert r.exit_code == 1 and "GUEST is a time-limited role" in r.output
    assert cli("users", "grant", "dora", "GUEST", "--until", "2099-01-01").exit_code == 0
    r = cli("users", "quota", "dora", "-5")
    assert r.exit_code == 1 and "invalid quota" in r.output
    r = cli("users", "quota", "dora", str(2**40))  # past the column: refused, not a database error
    assert r.exit_code == 1 and "invalid quota" in r.output
    r = cli("users", "add", "Not A Name")
    assert r.exit_code == 1 and "invalid username" in r.output
    r = cli("users", "grant", "nobody", "ADMIN")
    assert r.exit_code == 1 and "no user 'nobody'" in r.output
    r = cli("users", "grant", "dora", "EMPEROR")
    assert r.exit_code == 1 and "unknown role 'EMPEROR'" in r.output
    with db.sessionmaker() as s:
        dora = s.scalar(select(User).where(User.username == "dora"))
        assert dora.instance_quota == 3
        assert {g.role.value for g in dora.grants} == {"STAFF", "GUEST"}
    assert "dora" in cli("users", "list").output


def test_init_registers_the_local_cloud_as_clouds_add_does(cli, db: Database) -> None:
    """Audited like any registration, once: a second init keeps the settings an operator gave it."""
    from visa.audit.models import AuditEvent
    from visa.clouds.models import Cloud

    assert cli("init").exit_code == 0
    with db.sessionmaker() as s:
        events = [(e.action, e.target_id, e.actor_name) for e in s.scalars(select(AuditEvent))]
        assert events == [("cloud.register", "local", "system")]
        cloud = s.scalar(select(Cloud).where(Cloud.name == "local"))
        assert cloud is not None and cloud.kind == "local" and cloud.enabled
        cloud.config = {"provisioning": {"mount_type": "none"}}
        s.commit()
    assert cli("init").exit_code == 0
    with db.sessionmaker() as s:
        assert len(s.scalars(select(AuditEvent)).all()) == 1
        assert s.scalar(select(Cloud.config).where(Cloud.name == "local")) == {"provisioning": {"mount_type": "none"}}


def test_bad_catalogue_file_names_file_entry_field_and_applies_nothing(cli, tmp_path: Path) -> None:
    cli("init")
    flavours = tmp_path / "flavours"
    shutil.copytree(ROOT / "flavours", flavours)
    (flavours / "esrf.large.yaml").write_text((flavours / "esrf.large.yaml").read_text().replace("cores: 8", "cores: -8"))
    r = cli("catalogue", "apply", str(flavours))
    assert r.exit_code == 1
    assert "esrf.large.yaml: entry 'esrf.large': field 'cores'" in r.output
    r = cli("catalogue", "apply", "--dry-run", str(ROOT / "flavours"))
    assert "+ flavour esrf.large" in r.output  # nothing of the bad run was stored


def test_refuses_to_start_on_an_old_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISA_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.setenv("VISA_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    r = CliRunner().invoke(main, ["users", "list"])
    assert r.exit_code != 0 and "visa db upgrade" in r.output
    r = CliRunner().invoke(main, ["db", "upgrade"])
    assert r.exit_code == 0 and "revision" in r.output
    get_settings.cache_clear()


def test_invalid_configuration_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISA_PORT", "99999")
    monkeypatch.setenv("VISA_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    r = CliRunner().invoke(main, ["users", "list"])
    assert r.exit_code != 0 and "port" in r.output and "Traceback" not in r.output
    get_settings.cache_clear()


def test_the_system_accounts_names_are_refused_as_usernames(cli, monkeypatch, tmp_path) -> None:
    """root, the unix login visa runs as and the activity probe's account are nobody's visa name."""
    import getpass

    monkeypatch.setenv("VISA_PROVISIONING__PROBE_USERNAME", "visaprobe")
    assert cli("init").exit_code == 0
    for name in ("root", getpass.getuser(), "visaprobe"):
        r = cli("users", "add", name)
        assert r.exit_code == 1 and f"the username {name!r} is reserved" in r.output, r.output
    assert cli("users", "add", "visa-ops").exit_code == 0
    listing = tmp_path / "members.json"
    listing.write_text(json.dumps([{"id": "ev9-id21-1", "proposal": "ev9", "instrument": "id21",
                                    "start_date": "2026-10-01", "end_date": "2026-10-04", "members": ["root"]}]))
    r = cli("experiments", "import", str(listing))
    assert r.exit_code == 1 and "member root: field 'username': the username 'root' is reserved" in r.output, r.output
