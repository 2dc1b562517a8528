"""Members act as the owner inside a machine; the owner's home is shared by all their machines
(both databases). So a machine on that shared home lets nobody else act in it: no USER member,
no USER link, support staff only watch, and nobody else moves files. A machine asked for with a
home of its own is shared as before; the facility may accept the risk (``sharing.shared_instance_home``)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.auth.world import login, seed
from tests.factories import actor, make_cloud
from visa.errors import Conflict
from visa.instances import service
from visa.instances.models import Instance, InstanceHome, InstanceMember, MemberRole
from visa.instances.schemas import CreateInstance
from visa.policy import allowed
from visa.settings import Settings, SharingSettings
from visa.sharing import service as sharing
from visa.users.models import User


def _create(db, clock, world, name: str, settings: Settings, **kw) -> str:
    with db.unit_of_work() as s:
        owner = s.scalar(select(User).where(User.username == "owner"))
        owner.instance_quota = 10
        data = CreateInstance(name=name, plan_id=world.plan_id, experiment_ids=[world.experiment_id], **kw)
        return service.create_instance(actor(owner, clock), s, clock, settings, data).uid


def _home(db, uid: str) -> InstanceHome:
    with db.sessionmaker() as s:
        return s.scalar(select(Instance.home).where(Instance.uid == uid))


def test_the_home_is_chosen_at_create(db, clock) -> None:
    world = seed(db, clock)
    default = Settings(database_url=db.url, secret_key="x")
    assert _home(db, _create(db, clock, world, "alone", default)) == InstanceHome.SHARED  # the local cloud's homes
    assert _home(db, _create(db, clock, world, "together", default, own_home=True)) == InstanceHome.OWN
    accepted = Settings(database_url=db.url, secret_key="x", sharing=SharingSettings(shared_instance_home="shared"))
    assert _home(db, _create(db, clock, world, "accepted", accepted)) == InstanceHome.OPEN
    with db.unit_of_work() as s:  # a cloud keeping no home across machines: nothing to share, its own
        make_cloud(s, clock, "vms", kind="openstack")
    vm = Settings(database_url=db.url, secret_key="x", default_cloud="vms")
    assert _home(db, _create(db, clock, world, "vm", vm)) == InstanceHome.OWN


def test_nobody_acts_as_the_owner_in_a_machine_on_the_shared_home(app, db, clock, api_client) -> None:
    world = seed(db, clock)
    uid = _create(db, clock, world, "alone", Settings(database_url=db.url, secret_key="x"))
    owner = login(api_client, db, "owner")

    r = owner.post(f"/api/instances/{uid}/members", json={"username": "member", "role": "USER"})
    assert r.status_code == 409 and r.get_json()["field"] == "role", r.get_json()
    assert "all their machines share" in r.get_json()["message"]
    r = owner.post(f"/api/instances/{uid}/invitations", json={"role": "USER", "hours": 2})
    assert r.status_code == 409 and r.get_json()["field"] == "role", r.get_json()
    assert owner.post(f"/api/instances/{uid}/members", json={"username": "guest", "role": "GUEST"}).status_code == 201
    r = owner.put(f"/api/instances/{uid}/members/guest", json={"role": "USER"})
    assert r.status_code == 409, r.get_json()
    assert owner.post(f"/api/instances/{uid}/invitations", json={"role": "GUEST", "hours": 2}).status_code == 201

    page = owner.get(f"/instances/{uid}").get_data(as_text=True)
    assert "act as\n        you inside this machine" in page or "act as you inside this machine" in " ".join(page.split())
    assert "all your\n        machines share" in page or "which all your machines share" in " ".join(page.split())
    assert 'value="USER"' not in page  # the dialog offers guests only

    # Support staff and a member from before (a machine made before homes were recorded): they only watch.
    with db.unit_of_work() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == uid))
        for name, role in (("support", MemberRole.SUPPORT), ("member", MemberRole.USER)):
            user = s.scalar(select(User).where(User.username == name))
            inst.members.append(InstanceMember(user=user, role=role, created_at=clock.now()))
    with db.sessionmaker() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == uid))
        for name in ("support", "member"):
            who = actor(s.scalar(select(User).where(User.username == name)), clock)
            assert allowed(who, "instance.view", inst)
            assert not allowed(who, "instance.input", inst), name
            assert not allowed(who, "instance.files.read", inst) and not allowed(who, "instance.files.write", inst)
        assert allowed(actor(inst.owner, clock), "instance.input", inst)
    r = login(api_client, db, "member").get(f"/api/instances/{uid}/files")
    assert r.status_code == 403, r.get_json()


def test_a_machine_with_a_home_of_its_own_is_shared_as_before(app, db, clock, api_client) -> None:
    world = seed(db, clock)
    uid = _create(db, clock, world, "together", Settings(database_url=db.url, secret_key="x"), own_home=True)
    owner = login(api_client, db, "owner")
    assert owner.post(f"/api/instances/{uid}/members", json={"username": "member", "role": "USER"}).status_code == 201
    page = " ".join(owner.get(f"/instances/{uid}").get_data(as_text=True).split())
    assert "act as you inside this machine" in page and "which all your machines share" not in page
    with db.sessionmaker() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == uid))
        member = actor(s.scalar(select(User).where(User.username == "member")), clock)
        assert allowed(member, "instance.input", inst) and allowed(member, "instance.files.write", inst)


def test_the_facility_may_accept_members_acting_in_the_shared_home(db, clock) -> None:
    world = seed(db, clock)
    accepted = Settings(database_url=db.url, secret_key="x", sharing=SharingSettings(shared_instance_home="shared"))
    uid = _create(db, clock, world, "accepted", accepted)
    with db.unit_of_work() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == uid))
        owner = actor(inst.owner, clock)
        member = sharing.add_member(owner, s, clock, inst, "member", "USER")
        assert allowed(actor(member.user, clock), "instance.input", inst)
    with db.unit_of_work() as s, pytest.raises(Conflict):  # the recorded choice holds, not today's setting
        inst = s.scalar(select(Instance).where(Instance.uid == _create(db, clock, world, "later", Settings(
            database_url=db.url, secret_key="x"))))
        sharing.add_member(actor(inst.owner, clock), s, clock, inst, "other", "USER")
