"""The attack of a member on the owner's other machines, on real local sessions (root and
bubblewrap): a USER member of a shared machine writes startup files (~/.bashrc, IPython's
startup, Jupyter's config, openbox's autostart) with keys typed into the machine's xterm and through the
files API; the owner's other machine, on their home shared by all their machines, never has them,
so never runs them. And the machine on the shared home lets no USER member in at all."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from tests.clouds.local.xterm import type_line
from tests.factories import actor, make_experiment, make_flavour, make_image, make_plan, make_user
from tests.instances.test_life_local import _sync_until
from visa.catalogue.models import Protocol
from visa.clouds.local import supervisor as local_session
from visa.clouds.models import Cloud
from visa.commands.executor import run_pending_commands
from visa.db import Database
from visa.instances import service
from visa.instances.models import InstanceState
from visa.instances.schemas import CreateInstance
from visa.services import Services
from visa.users.models import User

pytestmark = pytest.mark.integration

if os.geteuid() != 0 or shutil.which("bwrap") is None:
    pytest.skip("the session's own unix account needs root and bubblewrap", allow_module_level=True)

SFTP_SERVER = "/usr/lib/openssh/sftp-server"
PLANTS = {
    ".bashrc": "echo PLANTED-bashrc\n",
    ".ipython/profile_default/startup/00-planted.py": "print('PLANTED-ipython')\n",
    ".jupyter/jupyter_server_config.py": "print('PLANTED-jupyter')\n",
    ".config/openbox/autostart": "echo PLANTED-openbox\n",
}


def _create(services: Services, plan_id: int, exp_id: int, name: str, **kw: Any) -> str:
    with services.database.unit_of_work() as s:
        owner = s.scalar(select(User).where(User.username == "home-olga"))
        uid = service.create_instance(
            actor(owner, services.clock), s, services.clock, services.settings,
            CreateInstance(name=name, plan_id=plan_id, experiment_ids=[exp_id], screen_width=1024, screen_height=768,
                           **kw),
        ).uid
    assert run_pending_commands(services) == 1
    started = _sync_until(services, uid, InstanceState.ACTIVE)
    assert started.state == InstanceState.ACTIVE, started.error_message
    return uid


def _sh(services: Services, uid: str, argv: list[str]) -> str:
    done = services.provider("local").exec_in_session(uid, argv)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


def _record(services: Services, uid: str) -> dict[str, Any]:
    provider = services.provider("local")
    return local_session.read_json(provider.instance_dir(uid) / local_session.INSTANCE_FILE)


@pytest.fixture
def world(app, db: Database, clock, tmp_path: Path) -> Iterator[tuple[Services, int, int]]:
    if not Path(SFTP_SERVER).exists():
        pytest.skip("openssh-sftp-server is not installed")
    services: Services = app.extensions["visa"]
    facility = tmp_path / "facility"
    for area in ("visitor", "processed"):
        (facility / area / "ev-home" / "id21").mkdir(parents=True)
    with db.unit_of_work() as s:
        s.add(Cloud(name="local", kind="local", enabled=True, created_at=clock.now(), config={
            "root_dir": str(tmp_path / "instances"),
            "provisioning": {
                "mount_type": "bind",
                "raw_mount_template": str(facility / "visitor/{proposal}/{beamline}"),
                "processed_mount_template": str(facility / "processed/{proposal}/{beamline}"),
            },
        }))
        olga = make_user(s, clock, "home-olga", password="olga-password", quota=5)
        make_user(s, clock, "home-mallory", password="mallory-password")
        exp = make_experiment(s, members=[olga], proposal="ev-home", instrument="id21")
        plan = make_plan(s, make_image(s, "desktop", {Protocol.VNC: 5901}), make_flavour(s, "esrf.medium"))
        ids = plan.id, exp.id
    accounts: set[str] = set()
    try:
        yield services, *ids
    finally:
        provider = services.provider("local")
        for server in provider.list_servers():
            record = _record(services, server.id)
            accounts.add(record.get("account", {}).get("name", ""))
            provider.delete(server.id)
        for name in filter(None, accounts):  # the host as it was: no account of ours left
            subprocess.run(["userdel", name], capture_output=True)
            subprocess.run(["groupdel", name], capture_output=True)


def test_a_member_cannot_plant_code_in_the_owners_other_machines(world, api_client) -> None:
    services, plan_id, exp_id = world
    other = _create(services, plan_id, exp_id, "embargoed")  # on the owner's shared home
    shared = _create(services, plan_id, exp_id, "together", own_home=True)
    owner = api_client()
    assert owner.login("home-olga", "olga-password").status_code == 200
    r = owner.post(f"/api/instances/{other}/members", json={"username": "home-mallory", "role": "USER"})
    assert r.status_code == 409, r.get_json()  # no USER member where the shared home runs
    r = owner.post(f"/api/instances/{shared}/members", json={"username": "home-mallory", "role": "USER"})
    assert r.status_code == 201, r.get_json()

    # The member, as the owner inside the shared machine: keys typed into its xterm...
    line = " && ".join(f"mkdir -p ~/{Path(p).parent} && echo \"{c.strip()}\" >> ~/{p}" for p, c in PLANTS.items())
    planted_in = Path(services.provider("local").instance_dir(shared)) / local_session.HOME_DIR
    type_line(services.provider("local"), shared, f"{line} && echo END > ~/typed.txt", planted_in / "typed.txt", "END")
    # ... and through the files API.
    mallory = api_client()
    assert mallory.login("home-mallory", "mallory-password").status_code == 200
    home = _record(services, shared)["home"]
    query = urlencode({"path": f"{home}/.profile", "overwrite": "true"})
    r = mallory.put(f"/api/instances/{shared}/files/content?{query}", data=b"echo PLANTED-profile\n")
    assert r.status_code == 201, r.get_json()

    assert (planted_in / ".ipython/profile_default/startup/00-planted.py").exists()  # the plant took, there
    assert "PLANTED-profile" in (planted_in / ".profile").read_text()

    # The owner's other machine: its home is the owner's shared one, and has none of it.
    shared_home = Path(_record(services, other)["home_dir"])
    assert shared_home != planted_in and _record(services, shared)["home_dir"] is None
    for path in (*PLANTS, ".profile"):
        assert "PLANTED" not in ((shared_home / path).read_text() if (shared_home / path).exists() else ""), path
    out = _sh(services, other, ["bash", "-lic", "ls -a ~/.config ~/.ipython ~/.jupyter 2>&1; echo end"])
    assert "PLANTED" not in out and out.rstrip().endswith("end"), out
