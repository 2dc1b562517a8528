"""Support access to a staff member's machine waits for the owner: an administrator cannot
approve their own request, and staff status from the identity provider counts (both databases)."""

from __future__ import annotations

from sqlalchemy import select

from tests.auth.world import login, seed
from visa.db import Database
from visa.instances.models import Instance, MemberRole
from visa.users.models import Role, RoleGrant, User


def _members(db: Database, uid: str) -> dict[str, MemberRole]:
    with db.sessionmaker() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == uid))
        return {m.user.username: m.role for m in inst.members}


def test_an_administrator_cannot_approve_their_own_support_request(app, db: Database, clock, api_client) -> None:
    world = seed(db, clock)  # "owner" is staff
    admin = login(api_client, db, "admin")
    r = admin.post(f"/api/instances/{world.uid}/support")
    assert r.status_code == 202, r.get_json()  # pending: the owner is asked
    r = admin.post(f"/api/instances/{world.uid}/support/admin/approve")
    assert r.status_code == 403, r.get_json()
    assert "admin" not in _members(db, world.uid)
    owner = login(api_client, db, "owner")
    assert owner.post(f"/api/instances/{world.uid}/support/admin/approve").status_code == 200
    assert _members(db, world.uid)["admin"] == MemberRole.SUPPORT


def test_staff_status_from_the_identity_provider_counts_for_the_owners_consent(app, db: Database, clock, api_client) -> None:
    world = seed(db, clock)
    with db.unit_of_work() as s:
        owner = s.scalar(select(User).where(User.username == "owner"))
        s.query(RoleGrant).filter_by(user_id=owner.id, role=Role.STAFF).delete()
        owner.idp_roles = "STAFF"  # what the provider's claims said at their last login or refresh
    helpdesk = login(api_client, db, "helpdesk")
    r = helpdesk.post(f"/api/instances/{world.uid}/support")
    assert r.status_code == 202, r.get_json()
    assert "helpdesk" not in _members(db, world.uid)

    with db.unit_of_work() as s:
        s.scalar(select(User).where(User.username == "owner")).idp_roles = ""  # no longer staff anywhere
    admin = login(api_client, db, "admin")
    assert admin.post(f"/api/instances/{world.uid}/support").status_code == 201  # joins at once
