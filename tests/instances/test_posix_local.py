"""End to end on the local cloud with its isolated session account (root and bubblewrap): a user
whose uid 23456 comes from the user-office import owns their processed data in the machine, and
a file written in their home share is there again on a second machine after the first is deleted."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.factories import actor, make_flavour, make_image, make_plan
from tests.instances.test_life_local import _act, _sync_until
from visa.actor import SYSTEM
from visa.catalogue.models import Protocol
from visa.clouds.models import Cloud
from visa.commands.executor import run_pending_commands
from visa.db import Database
from visa.experiments.importer import import_experiments, parse_file
from visa.experiments.models import Experiment
from visa.instances import service
from visa.instances.models import CommandAction, InstanceState
from visa.instances.schemas import CreateInstance
from visa.services import Services
from visa.settings import Settings
from visa.users.models import User

UID = 23456
USERNAME = "posix-ines"

if os.geteuid() != 0 or shutil.which("bwrap") is None:
    pytest.skip("the session's own unix account needs root and bubblewrap", allow_module_level=True)


def _create(services: Services, plan_id: int, name: str) -> str:
    with services.database.unit_of_work() as s:
        ines = s.scalar(select(User).where(User.username == USERNAME))
        exp = s.scalar(select(Experiment).where(Experiment.external_id == "ev280-id21-1"))
        inst = service.create_instance(
            actor(ines, services.clock), s, services.clock, services.settings,
            CreateInstance(name=name, plan_id=plan_id, experiment_ids=[exp.id], screen_width=1024, screen_height=768),
        )
        uid = inst.uid
    assert run_pending_commands(services) == 1
    started = _sync_until(services, uid, InstanceState.ACTIVE)
    assert started.state == InstanceState.ACTIVE, started.error_message
    return uid


def _sh(services: Services, uid: str, script: str) -> str:
    done = services.provider("local").exec_in_session(uid, ["sh", "-c", script])
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


def test_the_imported_uid_owns_the_data_and_the_home_outlives_the_machine(
    tmp_path: Path, db: Database, clock
) -> None:
    facility, homes = tmp_path / "facility", tmp_path / "homes"
    (facility / "visitor" / "ev280" / "id21").mkdir(parents=True)
    (facility / "visitor" / "ev280" / "id21" / "scan_0001.h5").write_text("raw data")
    homes.mkdir()
    experiments = tmp_path / "experiments.json"
    experiments.write_text(json.dumps([{
        "id": "ev280-id21-1", "proposal": "ev280", "instrument": "id21", "start_date": "2026-10-01",
        "end_date": "2026-10-04",
        "members": [{"username": USERNAME, "uid_number": UID, "gid_number": UID, "extra_gids": [24001]}],
    }]))
    settings = Settings(data_dir=tmp_path / "data", database_url=db.url, secret_key="k")
    services = Services(settings=settings, database=db, clock=clock)
    with db.unit_of_work() as s:
        s.add(Cloud(name="local", kind="local", enabled=True, created_at=clock.now(), config={
            "root_dir": str(tmp_path / "instances"),
            "provisioning": {
                "mount_type": "bind",
                "raw_mount_template": str(facility / "visitor/{proposal}/{beamline}"),
                "processed_mount_template": str(facility / "processed/{proposal}/{beamline}"),
                "home_mount_template": str(homes / "{username}"),
                "home_mount_root": str(homes),
            },
        }))
        import_experiments(SYSTEM, s, clock, parse_file(experiments), limits=settings.posix)
        plan_id = make_plan(s, make_image(s, "desktop", {Protocol.VNC: 5901}), make_flavour(s, "esrf.medium")).id
    try:
        first = _create(services, plan_id, "first")
        ids = _sh(services, first, "id -u; id -g; id -G").split("\n")
        assert ids[0] == str(UID) and ids[1] == str(UID) and "24001" in ids[2].split()
        processed = "/data/processed/ev280/id21"
        out = _sh(services, first, f"stat -c %u {processed}; echo result > {processed}/fit.h5; "
                                   f"stat -c %u {processed}/fit.h5; echo 'my notes' > ~/notes.txt")
        assert out.split() == [str(UID), str(UID)]
        # On the host, the facility's storage sees the user's own uid on what they wrote.
        assert (facility / "processed/ev280/id21/fit.h5").stat().st_uid == UID
        assert (homes / USERNAME / "notes.txt").stat().st_uid == UID

        _act(services, first, CommandAction.DELETE)
        assert _sync_until(services, first, InstanceState.DELETED).state == InstanceState.DELETED
        assert services.provider("local").get(first) is None

        second = _create(services, plan_id, "second")
        assert second != first
        assert _sh(services, second, "cat ~/notes.txt") == "my notes\n"
    finally:
        provider = services.provider("local")
        for server in provider.list_servers():
            provider.delete(server.id)
        services.close()
