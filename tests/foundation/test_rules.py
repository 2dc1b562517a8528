"""Model rules on both databases: quota, role expiry, plan filtering, lifetime resolution."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from tests.factories import (
    actor,
    make_cloud,
    make_experiment,
    make_flavour,
    make_image,
    make_instrument,
    make_plan,
    make_user,
)
from visa.actor import SYSTEM
from visa.catalogue.service import inactivity_limit_hours, max_lifetime_hours, plans_for
from visa.errors import InvalidInput, QuotaExceeded
from visa.instances import service
from visa.instances.models import InstanceState
from visa.instances.schemas import CreateInstance
from visa.settings import LifetimeSettings, Settings
from visa.users import service as users
from visa.users.models import Role

DEFAULTS = LifetimeSettings()


@pytest.fixture
def settings(tmp_path) -> Settings:  # noqa: ANN001
    return Settings(data_dir=tmp_path)


def _catalogue(session: Session):  # noqa: ANN202
    id16a = make_instrument(session, "id16a")
    desktop = make_image(session)
    medium = make_flavour(session, "esrf.medium")
    gpu = make_flavour(session, "esrf.gpu.a40", 16, 32768, gpu="NVIDIA A40",
                       limit_roles=(Role.SCIENTIFIC_COMPUTING,), limit_instruments=(id16a,),
                       lifetimes={None: 168, Role.STAFF: 720})
    return make_plan(session, desktop, medium, preset=True), make_plan(session, desktop, gpu)


def test_plans_filtered_by_role_and_instrument(session: Session, clock) -> None:  # noqa: ANN001
    medium_plan, gpu_plan = _catalogue(session)
    alice = make_user(session, clock, "alice")
    carol = make_user(session, clock, "carol", roles=(Role.SCIENTIFIC_COMPUTING,))
    on_id21 = make_experiment(session, members=[alice], instrument="id21")
    on_id16a = make_experiment(session, members=[alice], instrument="id16a")

    assert plans_for(actor(alice, clock), session, [on_id21]) == [medium_plan]
    assert set(plans_for(actor(alice, clock), session, [on_id21, on_id16a])) == {medium_plan, gpu_plan}
    assert set(plans_for(actor(carol, clock), session, [])) == {medium_plan, gpu_plan}
    assert set(plans_for(SYSTEM, session, [])) == {medium_plan, gpu_plan}


def test_role_expiry(session: Session, clock) -> None:  # noqa: ANN001
    _, gpu_plan = _catalogue(session)
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


def test_guest_needs_expiry_and_grants_need_admin(session: Session, clock) -> None:  # noqa: ANN001
    bob = make_user(session, clock, "bob")
    mallory = make_user(session, clock, "mallory", roles=(Role.STAFF,))
    with pytest.raises(InvalidInput, match="time-limited"):
        users.grant_role(SYSTEM, session, clock, bob, Role.GUEST)
    from visa.errors import Forbidden

    with pytest.raises(Forbidden):
        users.grant_role(actor(mallory, clock), session, clock, mallory, Role.ADMIN)


def test_lifetime_is_the_maximum_of_the_rules_that_apply(session: Session, clock) -> None:  # noqa: ANN001
    _, gpu_plan = _catalogue(session)
    medium = make_flavour(session, "plain")
    gpu = gpu_plan.flavour
    assert max_lifetime_hours(medium, set(), DEFAULTS) == 14 * 24
    assert max_lifetime_hours(medium, {Role.STAFF}, DEFAULTS) == 60 * 24
    assert max_lifetime_hours(gpu, set(), DEFAULTS) == 168
    assert max_lifetime_hours(gpu, {Role.STAFF}, DEFAULTS) == 720
    # A role without a flavour rule brings its default: a user default (14 d) beats the GPU's 7 d.
    assert max_lifetime_hours(gpu, {Role.SCIENTIFIC_COMPUTING}, DEFAULTS) == 14 * 24
    assert max_lifetime_hours(gpu, {Role.ADMIN, Role.STAFF}, DEFAULTS) == 60 * 24
    assert inactivity_limit_hours(set(), DEFAULTS) == 96
    assert inactivity_limit_hours({Role.STAFF}, DEFAULTS) == 192


def _create(session, clock, settings, user, plan, experiments=(), **kw):  # noqa: ANN001, ANN202
    data = CreateInstance(name="analysis", plan_id=plan.id, experiment_ids=[e.id for e in experiments], **kw)
    return service.create_instance(actor(user, clock), session, clock, settings, data)


def test_quota_and_unlimited(session: Session, clock, settings: Settings) -> None:  # noqa: ANN001
    medium_plan, _ = _catalogue(session)
    make_cloud(session, clock)
    alice = make_user(session, clock, "alice", quota=2)
    exp = make_experiment(session, members=[alice])
    first = _create(session, clock, settings, alice, medium_plan, [exp])
    assert first.state == InstanceState.BUILDING
    assert first.terminates_at == clock.now() + timedelta(days=14)
    _create(session, clock, settings, alice, medium_plan, [exp])
    with pytest.raises(QuotaExceeded, match="quota is 2"):
        _create(session, clock, settings, alice, medium_plan, [exp])
    first.deleted_at = clock.now()
    session.flush()
    _create(session, clock, settings, alice, medium_plan, [exp])
    users.set_quota(SYSTEM, session, clock, alice, -1)
    for _ in range(3):
        _create(session, clock, settings, alice, medium_plan, [exp])
    with pytest.raises(InvalidInput, match="quota"):
        users.set_quota(SYSTEM, session, clock, alice, -2)


def test_create_rules(session: Session, clock, settings: Settings) -> None:  # noqa: ANN001
    medium_plan, gpu_plan = _catalogue(session)
    make_cloud(session, clock)
    alice = make_user(session, clock, "alice")
    staff = make_user(session, clock, "sam", roles=(Role.STAFF,))
    bob = make_user(session, clock, "bob")
    hers = make_experiment(session, members=[alice])
    with pytest.raises(InvalidInput, match="unknown experiment"):
        _create(session, clock, settings, bob, medium_plan, [hers])
    from visa.errors import Forbidden

    with pytest.raises(Forbidden):  # no experiment: only ADMIN, STAFF, GUEST
        _create(session, clock, settings, alice, medium_plan)
    inst = _create(session, clock, settings, staff, medium_plan)
    assert inst.terminates_at - clock.now() == timedelta(days=60)
    with pytest.raises(InvalidInput, match="plan"):
        _create(session, clock, settings, alice, gpu_plan, [hers])
    short = _create(session, clock, settings, alice, medium_plan, [hers], lifetime_hours=5)
    assert short.terminates_at - clock.now() == timedelta(hours=5)
    capped = _create(session, clock, settings, staff, medium_plan, lifetime_hours=24 * 100)
    assert capped.terminates_at - clock.now() == timedelta(days=60)
