"""Invitation links (both databases): single use, expiring, with the role chosen, redeemed by a
person logged in; a link reused, expired or unknown is a clear 4xx and changes nothing."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from tests.auth.world import login, seed
from tests.factories import actor
from visa.auth.tokens import create_api_token
from visa.instances.models import Instance, InstanceMember, MemberRole
from visa.sharing.invitations import hash_token
from visa.sharing.models import Invitation
from visa.users.models import User


def _members(db, uid: str) -> dict[str, str]:
    with db.sessionmaker() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == uid))
        return {m.user.username: m.role.value for m in inst.members}


def test_a_link_gives_its_role_once(app, db, clock, api_client) -> None:
    world = seed(db, clock)
    owner = login(api_client, db, "owner")
    r = owner.post(f"/api/instances/{world.uid}/invitations", json={"role": "GUEST", "hours": 2})
    assert r.status_code == 201, r.get_json()
    url = r.get_json()["url"]
    token = url.rsplit("/invite/", 1)[1]
    with db.sessionmaker() as s:  # only a hash is kept
        assert s.scalar(select(func.count()).select_from(Invitation).where(Invitation.token_hash == token)) == 0
    listed = owner.get(f"/api/instances/{world.uid}/invitations").get_json()
    assert len(listed) == 1 and listed[0]["url"] is None and listed[0]["role"] == "GUEST"

    other = login(api_client, db, "other")
    page = other.get(f"/invite/{token}")
    assert page.status_code == 200 and "guest" in page.get_data(as_text=True)
    assert _members(db, world.uid).get("other") is None  # looking spends nothing
    assert api_client().get(f"/invite/{token}").status_code == 302  # log in first
    assert owner.post("/api/invitations/redeem", json={"token": token}).status_code == 409  # own machine: not spent

    r = other.post("/api/invitations/redeem", json={"token": token})
    assert r.status_code == 201 and r.get_json()["uid"] == world.uid, r.get_json()
    assert _members(db, world.uid)["other"] == "GUEST"
    assert owner.get(f"/api/instances/{world.uid}/invitations").get_json()[0]["used_by"] == "other"

    before = _members(db, world.uid)
    r = login(api_client, db, "helpdesk").post("/api/invitations/redeem", json={"token": token})
    assert r.status_code == 409 and r.get_json()["error"] == "invitation_used", r.get_json()
    assert _members(db, world.uid) == before
    # revoking a used link is refused; the member is removed as any other
    used_id = listed[0]["id"]
    assert owner.delete(f"/api/instances/{world.uid}/invitations/{used_id}").status_code == 409


def test_expired_unknown_and_token_redemptions_change_nothing(app, db, clock, api_client) -> None:
    world = seed(db, clock)
    owner = login(api_client, db, "owner")
    url = owner.post(f"/api/instances/{world.uid}/invitations", json={"role": "USER", "hours": 1}).get_json()["url"]
    token = url.rsplit("/", 1)[1]
    other = login(api_client, db, "other")
    before = _members(db, world.uid)

    r = other.post("/api/invitations/redeem", json={"token": "y" * 32})
    assert r.status_code == 404 and r.get_json()["field"] == "token"
    assert other.post("/api/invitations/redeem", json={"token": "short"}).status_code == 400
    assert other.post("/api/invitations/redeem", json={}).status_code == 400

    # a script's API token cannot redeem a link: a person logs in
    with db.unit_of_work() as s:
        _, secret = create_api_token(actor(s.scalar(select(User).where(User.username == "other")), clock), s, clock,
                                     name="script")
    r = api_client().client.post("/api/invitations/redeem", json={"token": token},
                                 headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 403, r.get_json()

    clock.advance(hours=2)
    r = other.post("/api/invitations/redeem", json={"token": token})
    assert r.status_code == 409 and r.get_json()["error"] == "invitation_expired"
    assert other.get(f"/invite/{token}").status_code == 409
    assert _members(db, world.uid) == before
    with db.sessionmaker() as s:
        assert s.scalar(select(Invitation.used_at)) is None
        assert s.scalar(select(func.count()).select_from(InstanceMember)) > 0

    # links are the owner's to make: a member or another user cannot
    assert login(api_client, db, "member").post(f"/api/instances/{world.uid}/invitations", json={}).status_code == 403
    assert other.post(f"/api/instances/{world.uid}/invitations", json={}).status_code == 404
    assert owner.post(f"/api/instances/{world.uid}/invitations", json={"role": "OWNER"}).status_code == 400
    assert owner.post(f"/api/instances/{world.uid}/invitations", json={"hours": 100000}).status_code == 400


def test_an_admin_cannot_let_anyone_into_a_staff_owners_machine(app, db, clock, api_client) -> None:
    """Only the owner lets people in: an administrator makes no link and adds nobody (they ask as
    support, which a staff owner approves); a link someone else made is worthless, to its creator first."""
    world = seed(db, clock)
    admin = login(api_client, db, "admin")
    r = admin.post(f"/api/instances/{world.uid}/invitations", json={"role": "USER", "hours": 2})
    assert r.status_code == 403, r.get_json()
    r = admin.post(f"/api/instances/{world.uid}/members", json={"username": "other", "role": "USER"})
    assert r.status_code == 403, r.get_json()
    r = admin.put(f"/api/instances/{world.uid}/members/guest", json={"role": "USER"})  # no promotion either
    assert r.status_code == 403, r.get_json()
    assert admin.delete(f"/api/instances/{world.uid}/members/guest").status_code == 204  # removing stays theirs
    assert admin.get(f"/api/instances/{world.uid}/invitations").status_code == 200

    # A link an administrator made (as one could before): redeeming it is refused to its creator and to anyone.
    token = "admin-made-link-0123456789abcdef"
    with db.unit_of_work() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == world.uid))
        admin_id = s.scalar(select(User.id).where(User.username == "admin"))
        s.add(Invitation(instance_id=inst.id, token_hash=hash_token(token), role=MemberRole.USER,
                         created_by_id=admin_id, created_at=clock.now(), expires_at=clock.now() + timedelta(hours=2)))
    before = _members(db, world.uid)
    r = admin.post("/api/invitations/redeem", json={"token": token})
    assert r.status_code == 403 and r.get_json()["field"] == "token", r.get_json()
    assert admin.get(f"/invite/{token}").status_code == 403
    r = login(api_client, db, "other").post("/api/invitations/redeem", json={"token": token})
    assert r.status_code == 403 and r.get_json()["field"] == "token", r.get_json()
    assert _members(db, world.uid) == before
    with db.sessionmaker() as s:
        assert s.scalar(select(Invitation.used_at).where(Invitation.token_hash == hash_token(token))) is None
