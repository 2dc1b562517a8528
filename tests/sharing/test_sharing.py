"""Sharing and support access: the service rules, the REST answers and the audit, on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.auth.world import login, seed
from tests.factories import actor
from visa.audit.models import AuditEvent
from visa.errors import Conflict, Forbidden, InvalidInput, NotFound
from visa.instances.models import ConnectToken, Instance, MemberRole
from visa.policy import allowed
from visa.sharing import service as sharing
from visa.sharing.models import SupportRequest
from visa.users.models import User


def _load(s, uid: str, *names: str):
    inst = s.scalar(select(Instance).where(Instance.uid == uid))
    users = [s.scalar(select(User).where(User.username == n)) for n in names]
    return inst, users


def test_owner_shares_changes_and_revokes_and_every_change_is_audited(db, clock) -> None:
    world = seed(db, clock)
    seen: list[sharing.AccessChange] = []
    listener = sharing.on_access_changed(seen.append)
    try:
        with db.unit_of_work() as s:
            inst, (owner, other) = _load(s, world.uid, "owner", "other")
            m = sharing.add_member(actor(owner, clock), s, clock, inst, "other", "GUEST")
            assert m.role == MemberRole.GUEST
            assert allowed(actor(other, clock), "instance.connect", inst)
            assert not allowed(actor(other, clock), "instance.input", inst)  # GUEST: view only
            sharing.change_role(actor(owner, clock), s, clock, inst, "other", "USER")
            assert allowed(actor(other, clock), "instance.input", inst)
            s.add(ConnectToken(token_hash="h" * 64, instance_id=inst.id, user_id=other.id, role=MemberRole.USER,
                               created_at=clock.now(), expires_at=clock.now()))
            s.flush()
            sharing.revoke_member(actor(owner, clock), s, clock, inst, "other")
            assert seen == []  # only once committed
        assert [c.role for c in seen] == [MemberRole.USER, None] and seen[-1].username == "other"
        with db.unit_of_work() as s:
            inst, (other,) = _load(s, world.uid, "other")
            assert not allowed(actor(other, clock), "instance.connect", inst)
            assert sharing.connection_allowed(s, inst.id, other.id, clock) is None
            assert s.scalar(select(ConnectToken).where(ConnectToken.user_id == other.id)) is None
            actions = [e.action for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]
            assert actions[-3:] == ["instance.member.add", "instance.member.role", "instance.member.revoke"]
    finally:
        sharing._listeners.remove(listener)


def test_nobody_escalates_through_sharing(db, clock) -> None:
    world = seed(db, clock)
    with db.unit_of_work() as s:
        inst, (owner, member, guest, admin) = _load(s, world.uid, "owner", "member", "guest", "admin")
        for who in (member, guest):
            with pytest.raises(Forbidden):
                sharing.add_member(actor(who, clock), s, clock, inst, "other", "USER")
            with pytest.raises(Forbidden):
                sharing.change_role(actor(who, clock), s, clock, inst, "guest", "USER")
        for role in ("OWNER", "SUPPORT", "ADMIN", "user; drop"):
            with pytest.raises(InvalidInput):
                sharing.add_member(actor(owner, clock), s, clock, inst, "other", role)
        with pytest.raises(Forbidden):  # an admin does not add themselves: they ask as support
            sharing.add_member(actor(admin, clock), s, clock, inst, "admin", "USER")
        with pytest.raises(Conflict):
            sharing.revoke_member(actor(admin, clock), s, clock, inst, "owner")
        with pytest.raises(Conflict):
            sharing.change_role(actor(owner, clock), s, clock, inst, "owner", "GUEST")
        with pytest.raises(InvalidInput):
            sharing.add_member(actor(owner, clock), s, clock, inst, "x" * 10_000, "USER")
        with pytest.raises(NotFound):
            sharing.add_member(actor(owner, clock), s, clock, inst, "nobody", "USER")
        sharing.revoke_member(actor(guest, clock), s, clock, inst, "guest")  # leaving is always allowed
        assert not allowed(actor(guest, clock), "instance.view", inst)


def test_support_joins_a_non_staff_owner_at_once_and_waits_for_a_staff_owner(db, clock) -> None:
    world = seed(db, clock)
    with db.unit_of_work() as s:
        mine, (owner, helpdesk, admin, member) = _load(s, world.uid, "owner", "helpdesk", "admin", "member")
        theirs, _ = _load(s, world.other_uid)
        # not staff: support joins directly (audited), and may then connect
        m = sharing.request_support_access(actor(helpdesk, clock), s, clock, theirs)
        assert m is not None and m.role == MemberRole.SUPPORT
        assert allowed(actor(helpdesk, clock), "instance.connect", theirs)
        # staff owner: the admin's request waits; no access until approved
        assert isinstance(sharing.request_support_access(actor(admin, clock), s, clock, mine), SupportRequest)
        assert not allowed(actor(admin, clock), "instance.connect", mine)
        pending = {p.username for p in sharing.pending_support_requests(actor(owner, clock), s, clock, mine)}
        assert pending == {"helpdesk", "admin"}
        with pytest.raises(Forbidden):
            sharing.request_support_access(actor(member, clock), s, clock, mine)  # not support staff
        with pytest.raises(Forbidden):
            sharing.answer_support_request(actor(member, clock), s, clock, mine, "admin", approve=True)
        sharing.answer_support_request(actor(owner, clock), s, clock, mine, "admin", approve=True)
        sharing.answer_support_request(actor(owner, clock), s, clock, mine, "helpdesk", approve=False)
        assert allowed(actor(admin, clock), "instance.connect", mine)
        assert not allowed(actor(helpdesk, clock), "instance.connect", mine)
        assert sharing.pending_support_requests(actor(owner, clock), s, clock, mine) == []
        with pytest.raises(NotFound):  # nothing pending any more
            sharing.answer_support_request(actor(owner, clock), s, clock, mine, "helpdesk", approve=True)
        # requests expire after an hour
        sharing.request_support_access(actor(helpdesk, clock), s, clock, mine)
        clock.advance(hours=2)
        assert sharing.pending_support_requests(actor(owner, clock), s, clock, mine) == []


def test_members_rest_and_user_search(db, clock, api_client) -> None:
    world = seed(db, clock)
    owner = login(api_client, db, "owner")
    r = owner.get("/api/users/search?q=ot")
    assert r.status_code == 200 and r.get_json() == [{"username": "other", "full_name": "Other Person"}]
    assert owner.get("/api/users/search?q=person").status_code == 200
    assert len(owner.get("/api/users/search?q=person").get_json()) == 7  # every seeded user, bounded fields
    assert owner.get("/api/users/search?q=o").status_code == 400
    assert owner.get("/api/users/search?q=" + "a" * 65).status_code == 400
    assert owner.get("/api/users/search?q=%25%25").get_json() == []  # LIKE wildcards are literal
    assert api_client().get("/api/users/search?q=ot").status_code == 401

    base = f"/api/instances/{world.uid}/members"
    r = owner.post(base, json={"username": "other", "role": "GUEST"})
    assert r.status_code == 201 and r.get_json()["role"] == "GUEST"
    assert owner.post(base, json={"username": "other", "role": "GUEST"}).status_code == 409
    assert owner.post(base, json={"username": "other", "role": "OWNER"}).status_code == 400
    names = [m["username"] for m in owner.get(base).get_json()]
    assert names[0] == "owner" and "other" in names
    assert owner.patch(f"{base}/other", json={"role": "USER"}).get_json()["role"] == "USER"
    other = login(api_client, db, "other")
    assert other.get(f"/api/instances/{world.uid}").status_code == 200
    assert owner.delete(f"{base}/other").status_code == 204
    assert other.get(f"/api/instances/{world.uid}").status_code == 404


def test_privilege_escalation_by_a_non_admin_granting_roles(db, clock, api_client) -> None:
    """Roles are granted by admins only: not through the API, sharing, tokens or claims."""
    from visa.settings import OidcSettings
    from visa.users.models import Role
    from visa.users.service import grant_role

    seed(db, clock)
    with db.unit_of_work() as s:
        _, (member, other) = _load(s, "", "member", "other")
        with pytest.raises(Forbidden):
            grant_role(actor(member, clock), s, clock, other, Role.ADMIN)
    c = login(api_client, db, "member")
    for url, body in [("/api/admin/users/member/roles", {"role": "ADMIN"}),
                      ("/api/admin/users/other/roles", {"role": "STAFF"})]:
        assert c.post(url, json=body).status_code == 403
    assert c.post("/api/tokens", json={"name": "x", "scopes": "admin"}).status_code == 400
    me = c.get("/api/me").get_json()
    assert me["roles"] == []
    # token claims only count through an explicit mapping
    from visa.auth.oidc import roles_from_claims

    settings = OidcSettings(role_claim="realm_access.roles", role_mapping={"visa-admin": "ADMIN"})
    claims = {"realm_access": {"roles": ["ADMIN", "STAFF", "admin", "visa-user"]}}
    assert roles_from_claims(claims, settings) == frozenset()
    assert roles_from_claims({"realm_access": {"roles": ["visa-admin"]}}, settings) == {Role.ADMIN}
    assert roles_from_claims(claims, OidcSettings()) == frozenset()


def test_a_support_request_tells_the_owners_stream_at_the_commit(committed_db, clock) -> None:
    """Support requests are sharing's rows: their commit still names the instance, so the owner's
    open page is prompted at once."""
    world = seed(committed_db, clock)
    heard: list[str] = []
    unhook = committed_db.on_commit(heard.append)
    try:
        with committed_db.unit_of_work() as s:
            mine, (admin,) = _load(s, world.uid, "admin")
            instance_id = mine.id
            assert isinstance(sharing.request_support_access(actor(admin, clock), s, clock, mine), SupportRequest)
    finally:
        unhook()
    assert f"i{instance_id}" in heard[-1].split(",")
