"""Role grants on both databases: expiry, a guest's required end, and who may grant."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from tests.factories import actor, make_catalogue, make_user
from visa.actor import SYSTEM
from visa.catalogue.service import plans_for
from visa.errors import InvalidInput
from visa.users import service as users
from visa.users.models import Role


def test_role_expiry(session: Session, clock) -> None:
    _, gpu_plan = make_catalogue(session)
    guest = make_user(session, clock, "guest1")
    users.grant_role(SYSTEM, session, clock, guest, Role.GUEST, expires_at=clock.now() + timedelta(days=1))
    users.grant_role(SYSTEM, session, clock, guest, Role.SCIENTIFIC_COMPUTING, expires_at=clock.now() + timedelta(hours=2))
    assert guest.roles_at(clock.now()) == {Role.GUEST, Role.SCIENTIFIC_COMPUTING}
    assert gpu_plan in plans_for(actor(guest, clock), session, [])
    clock.advance(hours=3)
    assert guest.roles_at(clock.now()) == {Role.GUEST}
    assert gpu_plan not in plans_for(actor(guest, clock), session, [])
    clock.advance(days=1)
    assert guest.roles_at(clock.now()) == set()
    assert users.purge_expired_grants(session, clock) == 2


def test_guest_needs_expiry_and_grants_need_admin(session: Session, clock) -> None:
    bob = make_user(session, clock, "bob")
    mallory = make_user(session, clock, "mallory", roles=(Role.STAFF,))
    with pytest.raises(InvalidInput, match="time-limited"):
        users.grant_role(SYSTEM, session, clock, bob, Role.GUEST)
    from visa.errors import Forbidden

    with pytest.raises(Forbidden):
        users.grant_role(actor(mallory, clock), session, clock, mallory, Role.ADMIN)
