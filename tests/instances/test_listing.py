"""The lists read as rows (visa/instances/listing.py) say what the ORM objects say, on both
databases: the home list and the admin pages give, field by field, what ``instance_out`` and
``admin_instance`` give for the same instances; nobody sees another's instance in their home
list; the admin search keeps its policy check; and the number of SQL statements does not grow
with the number of instances (no query per row)."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import event, select

from tests.admin.world import make_instance
from tests.factories import actor, make_cloud, make_experiment, make_flavour, make_image, make_plan, make_user
from visa.admin.serialize import admin_instance, admin_row
from visa.catalogue.models import Protocol
from visa.db import Database
from visa.errors import Forbidden
from visa.instances import listing, service
from visa.instances.models import Instance, InstanceHome, InstanceMember, InstanceState, MemberRole
from visa.instances.schemas import InstanceQuery
from visa.instances.serialize import instance_out, row_out
from visa.policy import allowed
from visa.users.models import Role, User


@pytest.fixture
def world(db: Database, clock) -> SimpleNamespace:
    """alice owns four instances (one deleted, one in error, one shared with bob as a user, one
    with two experiments and open data); bob owns one shared with alice as a guest; carol none."""
    with db.unit_of_work() as s:
        cloud = make_cloud(s, clock)
        alice = make_user(s, clock, "alice", full_name="Alice Liddell")
        bob = make_user(s, clock, "bob", full_name="Bob Builder")
        make_user(s, clock, "carol")
        make_user(s, clock, "root", roles=(Role.ADMIN,))
        e1 = make_experiment(s, members=[alice], proposal="ev280", instrument="id21")
        e2 = make_experiment(s, members=[alice, bob], proposal="hc4321", instrument="id11")
        e3 = make_experiment(s, members=[bob], proposal="ma1111", instrument="id16a")
        both = make_image(s, "jupyterdesk", {Protocol.VNC: 5901, Protocol.JUPYTER: 8888})
        plain = make_image(s, "desktop")
        gpu = make_flavour(s, "esrf.gpu", 16, 32768, gpu="NVIDIA A40")
        medium = make_flavour(s, "esrf.medium")
        p1, p2 = make_plan(s, both, gpu), make_plan(s, plain, medium, preset=True)
        make_instance(s, clock, alice, p1, cloud, name="two experiments", experiments=[e2, e1], age_hours=9)
        rich = s.scalar(select(Instance).where(Instance.name == "two experiments"))
        rich.open_data_experiments = [e3]
        rich.comments = "with open data"
        shared = make_instance(s, clock, alice, p2, cloud, name="shared", state=InstanceState.STOPPED, age_hours=7)
        shared.members.append(InstanceMember(user=bob, role=MemberRole.USER, created_at=clock.now()))
        broken = make_instance(s, clock, alice, p2, cloud, name="broken", state=InstanceState.ERROR, age_hours=5)
        broken.error_message = "the cloud said no"
        gone = make_instance(s, clock, alice, p1, cloud, name="gone", state=InstanceState.DELETED, age_hours=3)
        gone.deleted_at = clock.now() - timedelta(hours=2)
        bobs = make_instance(s, clock, bob, p1, cloud, name="bob's", experiments=[e3], age_hours=1)
        bobs.members.append(InstanceMember(user=alice, role=MemberRole.GUEST, created_at=clock.now()))
        bobs.terminates_at = clock.now() - timedelta(hours=1)  # past its end: 0 seconds left, not negative
    return SimpleNamespace()


def _user(s, clock, name: str):
    return actor(s.scalar(select(User).where(User.username == name)), clock)


def _normal(out: dict) -> dict:
    # A relation without an order: compared as sets.
    return {**out, "experiments": sorted(out["experiments"], key=lambda e: e["id"]),
            "open_data": sorted(out["open_data"], key=lambda e: e["id"])}


@pytest.mark.parametrize("name", ["alice", "bob", "carol"])
def test_home_rows_give_what_instance_out_gives(world, db, clock, name) -> None:
    with db.sessionmaker() as s:
        me = _user(s, clock, name)
        rows = [row_out(r, clock).model_dump(mode="json") for r in listing.home_rows(me, s)]
        orm = [instance_out(i, me, clock).model_dump(mode="json") for i in service.list_instances(me, s)]
    assert [_normal(r) for r in rows] == [_normal(o) for o in orm]
    names = {"alice": ["bob's", "broken", "shared", "two experiments"], "bob": ["bob's", "shared"], "carol": []}
    assert sorted(r["name"] for r in rows) == names[name]  # nobody else's, never a deleted one
    if name == "alice":
        assert rows[0]["role"] == "GUEST" and rows[0]["seconds_left"] == 0
        rich = next(r for r in rows if r["name"] == "two experiments")
        assert rich["protocols"] == ["JUPYTER", "VNC"] and len(rich["experiments"]) == 2
        assert [e["proposal"] for e in rich["open_data"]] == ["ma1111"]


@pytest.mark.parametrize("query", [
    {}, {"state": ["STOPPED", "ERROR"]}, {"deleted": True, "sort": "owner"}, {"sort": "-terminates_at", "per_page": 2},
    {"per_page": 2, "page": 2}, {"owner": "bob"}, {"per_page": 2, "page": 9},
])
def test_admin_rows_give_what_admin_instance_gives(world, db, clock, query) -> None:
    q = InstanceQuery(**query)
    with db.sessionmaker() as s:
        root = _user(s, clock, "root")
        rows, total = listing.search_rows(root, s, q)
        items, orm_total = service.search_instances(root, s, q)
        got = [_normal(admin_row(r, clock).model_dump(mode="json")) for r in rows]
        want = [_normal(admin_instance(i, root, clock).model_dump(mode="json")) for i in items]
    assert (got, total) == (want, orm_total)


def test_an_admin_who_is_a_member_sees_their_role_and_others_see_none(db, clock) -> None:
    with db.unit_of_work() as s:
        cloud, plan = make_cloud(s, clock), make_plan(s, make_image(s), make_flavour(s, "esrf.medium"))
        root = make_user(s, clock, "root", roles=(Role.ADMIN,))
        other = make_user(s, clock, "ops", roles=(Role.ADMIN,))
        make_instance(s, clock, root, plan, cloud)
        root_actor, other_actor = actor(root, clock), actor(other, clock)
        mine = listing.search_rows(root_actor, s, InstanceQuery())[0]
        theirs = listing.search_rows(other_actor, s, InstanceQuery())[0]
    assert [r.role for r in mine] == [MemberRole.OWNER]
    assert [r.role for r in theirs] == [None]


def test_the_admin_search_refuses_a_user(world, db, clock) -> None:
    with db.sessionmaker() as s, pytest.raises(Forbidden):
        listing.search_rows(_user(s, clock, "alice"), s, InstanceQuery())


def _statements(db: Database, fn) -> int:
    count = 0

    def _count(*_args: object) -> None:
        nonlocal count
        count += 1

    event.listen(db.engine, "before_cursor_execute", _count)
    try:
        fn()
    finally:
        event.remove(db.engine, "before_cursor_execute", _count)
    return count


def test_statements_do_not_grow_with_the_instances(db, clock) -> None:
    with db.unit_of_work() as s:
        cloud, plan = make_cloud(s, clock), make_plan(s, make_image(s), make_flavour(s, "esrf.medium"))
        alice = make_user(s, clock, "alice")
        make_user(s, clock, "root", roles=(Role.ADMIN,))
        make_instance(s, clock, alice, plan, cloud, experiments=[make_experiment(s, members=[alice])])

    def run() -> None:
        with db.sessionmaker() as s:
            listing.home_rows(_user(s, clock, "alice"), s)
            listing.search_rows(_user(s, clock, "root"), s, InstanceQuery())

    one = _statements(db, run)
    with db.unit_of_work() as s:
        alice = s.scalar(select(User).where(User.username == "alice"))
        for i in range(6):
            other_plan = make_plan(s, make_image(s, f"image{i}"), make_flavour(s, f"flavour{i}"))
            make_instance(s, clock, alice, other_plan, cloud, experiments=[make_experiment(s, members=[alice])])
    assert _statements(db, run) == one


# Every action the pages ask of an instance in a list (visa/instances/pages.py ``_card``).
PAGE_ACTIONS = ["instance.view", "instance.control", "instance.delete", "instance.share", "instance.invite",
                "instance.extend", "instance.connect", "instance.jupyter", "instance.input", "instance.edit",
                "instance.files.read", "instance.files.write"]


@pytest.mark.parametrize("home", list(InstanceHome))
@pytest.mark.parametrize(("access", "image_needs_owner"), [(None, True), (None, False), (True, True), (False, False)])
@pytest.mark.parametrize("owner_connected", [False, True])
def test_the_policy_answers_rows_as_it_answers_models(
    world, db, clock, home, access, image_needs_owner, owner_connected
) -> None:
    """The home page asks the policy of its rows (listing.RowTarget): for every member and every
    action a page asks, the answer is the model's, whatever the home, the owner-presence setting
    (the instance's, else its image's) and whether the owner is connected."""
    from visa.instances.models import ConnectionProtocol, InstanceConnection
    from visa.sharing import presence

    with db.unit_of_work() as s:
        for inst in s.scalars(select(Instance)):
            inst.home, inst.unrestricted_member_access = home, access
            inst.plan.image.members_need_owner = image_needs_owner
            if owner_connected:
                s.add(InstanceConnection(instance_id=inst.id, user_id=inst.owner_id, protocol=ConnectionProtocol.DESKTOP,
                                         role=MemberRole.OWNER, gateway="test:1", started_at=clock.now(),
                                         expires_at=clock.now() + timedelta(minutes=5)))
    asked = 0
    for name in ("alice", "bob", "carol"):
        with db.sessionmaker() as s:
            me = _user(s, clock, name)
            rows = listing.home_rows(me, s)
            targets = listing.policy_targets(me, s, rows, clock.now())
            for row, target in zip(rows, targets, strict=True):
                model = s.get(Instance, row.row.id)
                for action in PAGE_ACTIONS:
                    assert allowed(me, action, target) == allowed(me, action, model), (name, model.name, action)
                    asked += 1
                assert presence.waiting_for_owner(me, target, clock.now()) == \
                    presence.waiting_for_owner(me, model, clock.now())
                assert target.members_may_act == model.members_may_act
    assert asked == len(PAGE_ACTIONS) * 6  # alice's four live instances, bob's two

