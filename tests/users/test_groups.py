"""User groups on both databases: made by administrators (API, page, command line) or from the
identity provider's group claim at login, and named by flavour limits, lifetimes and network rules
as roles are."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.admin.world import bearer, build
from tests.factories import actor, make_catalogue, make_cloud, make_image, make_plan, make_user
from visa.actor import SYSTEM
from visa.audit.models import AuditEvent
from visa.auth.oidc import user_from_claims
from visa.catalogue.models import Flavour, NetworkRule
from visa.catalogue.service import apply_files, flavour_spec, max_lifetime_hours, plans_for
from visa.instances.models import Instance, InstanceState
from visa.network.service import wanted_groups
from visa.settings import LifetimeSettings, Settings
from visa.users import groups
from visa.users.models import GroupSource, User, UserGroup

ROOT = Path(__file__).resolve().parents[2]


def test_administrators_make_groups_and_add_members(app, db, clock) -> None:
    world = build(db, clock)
    client, h = app.test_client(), bearer(world.admin_token)
    r = client.post("/api/admin/groups", json={"name": "hercules-2026", "description": "HERCULES school"}, headers=h)
    assert r.status_code == 201 and r.get_json() == {"name": "hercules-2026", "description": "HERCULES school",
                                                     "members": []}
    for body, status, field in (({"name": "hercules-2026"}, 409, "name"), ({"name": "has space"}, 400, "name"),
                                ({"name": "x" * 65}, 400, "name"), ({"name": "ok", "roles": []}, 400, "roles")):
        r = client.post("/api/admin/groups", json=body, headers=h)
        assert r.status_code == status and r.get_json()["field"] == field, (body, r.get_json())
    r = client.put("/api/admin/groups/hercules-2026/members", json={"username": "alice"}, headers=h)
    assert r.status_code == 200 and r.get_json()["members"] == [{"username": "alice", "source": "ADMIN"}]
    assert client.put("/api/admin/groups/hercules-2026/members", json={"username": "nobody"},
                      headers=h).status_code == 404
    assert client.put("/api/admin/groups/nosuch/members", json={"username": "alice"}, headers=h).status_code == 404
    assert [g["name"] for g in client.get("/api/admin/groups", headers=h).get_json()] == ["hercules-2026"]
    # Not for users.
    u = bearer(world.user_token)
    assert client.get("/api/admin/groups", headers=u).status_code == 403
    assert client.post("/api/admin/groups", json={"name": "mine"}, headers=u).status_code == 403
    assert client.put("/api/admin/groups/hercules-2026/members", json={"username": "bob"}, headers=u).status_code == 403

    r = client.delete("/api/admin/groups/hercules-2026/members/alice", headers=h)
    assert r.status_code == 200 and r.get_json()["members"] == []
    assert client.delete("/api/admin/groups/hercules-2026/members/alice", headers=h).status_code == 404
    assert client.delete("/api/admin/groups/hercules-2026", headers=h).status_code == 204
    with db.sessionmaker() as s:
        assert s.scalars(select(UserGroup)).all() == []
        actions = [e.action for e in s.scalars(select(AuditEvent).where(AuditEvent.action.like("group.%"))
                                               .order_by(AuditEvent.id))]
    assert actions == ["group.create", "group.member.add", "group.member.remove", "group.delete"]


def test_the_admin_page_lists_groups(app, db, clock, api_client) -> None:
    build(db, clock)
    with db.unit_of_work() as s:
        groups.create_group(SYSTEM, s, clock, "course-a", "a course")
        groups.add_member(SYSTEM, s, clock, "course-a", s.scalar(select(User).where(User.username == "alice")))
    admin = api_client()
    assert admin.login("root", "root-password").status_code == 200
    page = admin.get("/admin/groups").get_data(as_text=True)
    assert 'data-group="course-a"' in page and "alice" in page and 'data-testid="group-create"' in page
    user = api_client()
    assert user.login("alice", "alice-password").status_code == 200
    assert user.get("/admin/groups").status_code == 403


def test_the_providers_claim_gives_groups_at_login_and_keeps_the_administrators(db, clock) -> None:
    settings = Settings(database_url=db.url, secret_key="x", oidc={"user_group_claim": "groups"})
    claims = {"iss": "https://idp.example", "sub": "s-1", "preferred_username": "zoe", "groups": ["vo-a", "vo-b"]}
    with db.unit_of_work() as s:
        zoe = user_from_claims(s, clock, claims, settings=settings)
        assert zoe.group_names() == {"vo-a", "vo-b"}
        groups.create_group(SYSTEM, s, clock, "kept")
        groups.add_member(SYSTEM, s, clock, "kept", zoe)
        groups.add_member(SYSTEM, s, clock, "vo-b", zoe)  # an administrator takes it over: it stays
    with db.unit_of_work() as s:  # the next login names other groups, and a value that is no name
        zoe = user_from_claims(s, clock, {**claims, "groups": ["vo-c", "bad name", "x" * 300]}, settings=settings)
        assert zoe.group_names() == {"vo-b", "vo-c", "kept"}
        assert {m.group.name: m.source for m in zoe.memberships}["vo-c"] == GroupSource.IDP
    with db.unit_of_work() as s:  # a token without the claim says nothing of the groups
        zoe = user_from_claims(s, clock, {k: v for k, v in claims.items() if k != "groups"}, settings=settings)
        assert zoe.group_names() == {"vo-b", "vo-c", "kept"}
    with db.sessionmaker() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "user.groups.claimed")
                           .order_by(AuditEvent.id)).all()
        assert [(e.details["added"], e.details["removed"]) for e in events] == [
            (["vo-a", "vo-b"], []), (["vo-c"], ["vo-a"])]


def test_groups_open_flavours_and_lengthen_lifetimes(session: Session, clock) -> None:
    medium_plan, gpu_plan = make_catalogue(session)
    alice, bob = make_user(session, clock, "alice"), make_user(session, clock, "bob")
    gpu = gpu_plan.flavour
    gpu.limit_groups, gpu.group_lifetimes = ["gpu-course"], {"gpu-course": 1000}
    groups.create_group(SYSTEM, session, clock, "gpu-course")
    groups.add_member(SYSTEM, session, clock, "gpu-course", alice)
    assert set(plans_for(actor(alice, clock), session, [])) == {medium_plan, gpu_plan}
    assert plans_for(actor(bob, clock), session, []) == [medium_plan]
    defaults = LifetimeSettings()
    assert max_lifetime_hours(gpu, set(), defaults, alice.group_names()) == 1000
    assert max_lifetime_hours(gpu, set(), defaults, bob.group_names()) == 168
    spec = flavour_spec(gpu, {})
    assert spec.limits.groups == ["gpu-course"]
    assert [(lt.group, lt.hours) for lt in spec.lifetimes if lt.group] == [("gpu-course", 1000)]


def test_catalogue_files_and_network_rules_name_groups(db, clock, tmp_path: Path) -> None:
    flavours = tmp_path / "flavours"
    shutil.copytree(ROOT / "flavours", flavours)
    text = (flavours / "esrf.gpu.a40.yaml").read_text()
    (flavours / "esrf.gpu.a40.yaml").write_text(
        text.replace("limits:\n", "limits:\n  groups: [gpu-course]\n", 1)
        .replace("lifetimes:\n", "lifetimes:\n  - group: gpu-course\n    hours: 500\n", 1))
    net = tmp_path / "network-rules"
    net.mkdir()
    (net / "rules.yaml").write_text("- name: course-net\n  groups: [gpu-course]\n  security_groups: [course-net]\n")
    with db.unit_of_work() as s:
        apply_files(SYSTEM, s, clock, [flavours, net])
    with db.unit_of_work() as s:
        gpu = s.scalar(select(Flavour).where(Flavour.name == "esrf.gpu.a40"))
        assert gpu.limit_groups == ["gpu-course"] and gpu.group_lifetimes == {"gpu-course": 500}
        ada = make_user(s, clock, "ada")
        inst = Instance(uid="u-grp-1", name="n", owner=ada, plan=make_plan(s, make_image(s), gpu),
                        cloud=make_cloud(s, clock, "sandbox", "openstack"), state=InstanceState.ACTIVE,
                        created_at=clock.now(), terminates_at=clock.now() + timedelta(days=9),
                        screen_width=1024, screen_height=768, secret="s")
        s.add(inst)
        s.flush()
        rules = list(s.scalars(select(NetworkRule)))
        now = datetime(2026, 3, 1, tzinfo=UTC)
        assert "course-net" not in wanted_groups(inst, rules, now)
        groups.create_group(SYSTEM, s, clock, "gpu-course")
        groups.add_member(SYSTEM, s, clock, "gpu-course", ada)
        assert "course-net" in wanted_groups(inst, rules, now)


def test_the_command_line_manages_groups(cli, committed_db) -> None:
    assert cli("users", "add", "dora", "--full-name", "Dora").exit_code == 0
    assert cli("users", "group-add", "course-b", "--description", "B").exit_code == 0
    r = cli("users", "group-add", "bad name")
    assert r.exit_code == 1 and "name" in r.output
    assert cli("users", "join", "dora", "course-b").output.strip() == "dora is in course-b"
    assert cli("users", "groups").output.strip() == "course-b: dora"
    assert cli("users", "leave", "dora", "course-b").exit_code == 0
    assert cli("users", "group-remove", "course-b").exit_code == 0
    assert cli("users", "groups", "--json").output.strip() == "[]"
