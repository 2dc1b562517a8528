"""Whose unix account a session on the local cloud runs as (visa as root, with bubblewrap): the
account recorded in the database as its owner's, never one found on the host by a name or a uid.
Users come in as they would: a first login through the identity provider, with a username of
their own choosing (the provider lets anyone sign up)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.auth.test_oidc import Idp, browser_login, idp, oidc_app  # noqa: F401 (fixtures)
from tests.clouds.accounts import remove_account, remove_recorded_accounts
from tests.factories import actor, make_experiment, make_flavour, make_image, make_plan, make_user
from visa.actor import SYSTEM
from visa.clouds.models import Cloud
from visa.commands.executor import run_pending_commands
from visa.db import Database
from visa.instances import service
from visa.instances.models import Instance, InstanceState
from visa.instances.schemas import CreateInstance
from visa.services import Services
from visa.users.models import User
from visa.users.service import Posix, set_posix

pytestmark = pytest.mark.integration

if os.geteuid() != 0 or shutil.which("bwrap") is None:
    pytest.skip("the sessions' own unix accounts need root and bubblewrap", allow_module_level=True)

# Accounts made here take uids of this range only (other tests use the default one).
UID_RANGE = (281000, 281999)


def _facility(base: Path) -> Path:
    return base / "facility"


@pytest.fixture
def world(oidc_app: Any, db: Database, tmp_path: Path) -> Iterator[tuple[Any, Services, int]]:  # noqa: F811
    """The app with a local cloud and a desktop plan; every session, account and group it makes
    is removed after the test."""
    services = oidc_app.extensions["visa"]
    with db.unit_of_work() as s:
        s.add(Cloud(name="local", kind="local", enabled=True, created_at=services.clock.now(),
                    config={"root_dir": str(tmp_path / "instances"), "uid_range": list(UID_RANGE), "provisioning": {
                        "mount_type": "bind",
                        "raw_mount_template": str(_facility(tmp_path) / "visitor/{proposal}/{beamline}"),
                        "processed_mount_template": str(_facility(tmp_path) / "processed/{proposal}/{beamline}"),
                    }}))
        plan = make_plan(s, make_image(s, "desktop"), make_flavour(s, "esrf.medium", cores=1, memory_mb=1024)).id
    try:
        yield oidc_app, services, plan
    finally:
        provider = services.provider("local")
        for server in provider.list_servers():
            provider.delete(server.id)
        remove_recorded_accounts(db)


def _first_login(app: Any, idp: Idp, username: str) -> Any:  # noqa: F811
    """A new user signs up at the provider with the name they chose, and logs in to visa."""
    idp.register(username, f"{username}-password")  # 409 (already there) for the run on the other database
    client, _ = browser_login(app, username, f"{username}-password")
    return client


def _experiment_of(services: Services, username: str) -> int:
    """An experiment of the user's, as the user office's import gives them."""
    with services.database.unit_of_work() as s:
        user = s.scalar(select(User).where(User.username == username))
        experiment = make_experiment(s, members=[user])
        raw = _facility(services.settings.data_dir.parent) / "visitor" / experiment.proposal.identifier / "id21"
        raw.mkdir(parents=True)
        return experiment.id


def _machine(client: Any, services: Services, plan: int, name: str) -> str:
    """The user asks for a machine through the API; the worker creates it on the local cloud."""
    me = client.get("/api/me").get_json()
    r = client.post("/api/instances", headers={"X-CSRF-Token": me["csrf_token"]},
                    json={"name": name, "plan_id": plan, "experiment_ids": [_experiment_of(services, me["username"])]})
    assert r.status_code == 201, r.get_json()
    uid = r.get_json()["uid"]
    run_pending_commands(services)
    return uid


def _running(services: Services, uid: str, timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    while True:
        server = services.provider("local").get(uid)
        if server is not None and server.state == InstanceState.ACTIVE:
            return
        assert time.monotonic() < deadline, (server, _instance(services, uid).error_message)
        time.sleep(0.2)


def _instance(services: Services, uid: str) -> Instance:
    with services.database.sessionmaker() as s:
        found = s.scalar(select(Instance).where(Instance.uid == uid))
        assert found is not None
        return found


def _sh(services: Services, uid: str, script: str) -> list[str]:
    _running(services, uid)
    done = services.provider("local").exec_in_session(uid, ["sh", "-c", script])
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().split()


def _user(db: Database, username: str) -> User:
    with db.sessionmaker() as s:
        user = s.scalar(select(User).where(User.username == username))
        assert user is not None
        return user


def test_a_chosen_username_never_takes_another_users_unix_account(world, idp, db: Database) -> None:  # noqa: F811
    """``john.doe`` is not a unix name as it stands; ``john-doe-30f696`` is, and once named the
    very account john.doe's had to be renamed to."""
    app, services, plan = world
    john = _first_login(app, idp, "john.doe")
    mine = _machine(john, services, plan, "john's")
    john_name, john_uid = _sh(services, mine, "id -un; id -u; echo john-private > ~/note")

    chooser = _first_login(app, idp, "john-doe-30f696")
    theirs = _machine(chooser, services, plan, "chooser's")
    their_name, their_uid, note = _sh(services, theirs, "id -un; id -u; cat ~/note 2>/dev/null || echo no-note")

    assert (their_name, their_uid) != (john_name, john_uid) and their_uid != john_uid
    assert note == "no-note"
    # Each account is recorded as its user's, and is the one the host has under that name.
    for username, name, uid in (("john.doe", john_name, john_uid), ("john-doe-30f696", their_name, their_uid)):
        user = _user(db, username)
        assert (user.unix_account, user.unix_account_uid) == (name, int(uid))
        assert pwd.getpwnam(name).pw_uid == int(uid)


def _create(services: Services, plan: int, username: str) -> str:
    experiment = _experiment_of(services, username)
    with services.database.unit_of_work() as s:
        user = s.scalar(select(User).where(User.username == username))
        assert user is not None
        inst = service.create_instance(actor(user, services.clock), s, services.clock, services.settings,
                                       CreateInstance(name=f"{username}'s", plan_id=plan, experiment_ids=[experiment]))
        uid = inst.uid
    run_pending_commands(services)
    return uid


def test_an_account_made_for_one_user_is_never_adopted_by_anothers_uid(world, db: Database) -> None:
    """Anna gets an account from the cloud's range; Ben is later given the same uid (an
    import or an administrator): Ben's machine is refused, it never runs as Anna."""
    _, services, plan = world
    with db.unit_of_work() as s:
        make_user(s, services.clock, "m1-anna", uid_number=None, gid_number=None)
        make_user(s, services.clock, "m1-ben", uid_number=None, gid_number=None)
    anna = _create(services, plan, "m1-anna")
    anna_uid = int(_sh(services, anna, "id -u")[0])
    assert UID_RANGE[0] <= anna_uid <= UID_RANGE[1]
    with db.unit_of_work() as s:
        ben = s.scalar(select(User).where(User.username == "m1-ben"))
        set_posix(SYSTEM, s, services.clock, ben, Posix(anna_uid, None), source="admin",
                  limits=services.settings.posix)
    bens = _create(services, plan, "m1-ben")
    instance = _instance(services, bens)
    assert instance.state == InstanceState.ERROR and "another visa user's" in (instance.error_message or "")
    assert services.provider("local").get(bens) is None
    assert _user(db, "m1-ben").unix_account is None


def test_a_new_account_never_takes_a_uid_a_visa_user_has(world, db: Database) -> None:
    """Carl's uid at the facility lies in the cloud's range (no account of this host has it yet);
    the account made for Dora, who has none, takes another."""
    _, services, plan = world
    free = next(u for u in range(*UID_RANGE) if not _taken(u))
    with db.unit_of_work() as s:
        make_user(s, services.clock, "m1-carl", uid_number=free, gid_number=free)
        make_user(s, services.clock, "m1-dora", uid_number=None, gid_number=None)
    dora = _create(services, plan, "m1-dora")
    dora_uid = int(_sh(services, dora, "id -u")[0])
    assert dora_uid != free
    assert _user(db, "m1-dora").unix_account_uid == dora_uid


def _taken(uid: int) -> bool:
    import grp

    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        pass
    try:
        grp.getgrgid(uid)
        return True
    except KeyError:
        return False


def test_an_operator_records_an_account_made_before_accounts_were_recorded(world, db: Database) -> None:
    """An account (and its home) from a visa that did not record accounts is refused, not
    adopted, until an operator records it (``visa users unix-account``); then the user's
    machines run as it, with the home they had."""
    from visa.clouds.local import host_account
    from visa.users.service import adopt_unix_account

    _, services, plan = world
    free = next(u for u in range(*UID_RANGE) if not _taken(u))
    name = "visa-m2-erik"
    subprocess.run(["groupadd", "-g", str(free), name], check=True)
    subprocess.run(["useradd", "-u", str(free), "-g", str(free), "-M", "-N", "-c", "visa session user m2-erik",
                    name], check=True)
    try:
        home = services.provider("local").root / ".homes" / name
        home.mkdir(parents=True)
        (home / "thesis.tex").write_text("kept\n")
        os.chown(home, free, free)
        with db.unit_of_work() as s:
            make_user(s, services.clock, "m2-erik", uid_number=None, gid_number=None)
        refused = _instance(services, _create(services, plan, "m2-erik"))
        assert refused.state == InstanceState.ERROR and "not recorded" in (refused.error_message or "")

        with db.unit_of_work() as s:
            erik = s.scalar(select(User).where(User.username == "m2-erik"))
            assert erik is not None
            adopt_unix_account(SYSTEM, s, services.clock, erik, *host_account(name))
        machine = _create(services, plan, "m2-erik")
        assert _sh(services, machine, "id -un; id -u; cat ~/thesis.tex") == [name, str(free), "kept"]
    finally:
        for server in services.provider("local").list_servers():
            services.provider("local").delete(server.id)
        remove_account(name)
