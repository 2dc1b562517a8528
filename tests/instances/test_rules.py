"""Instance rules on both databases: the quota, unlimited users, and what a creation may ask for."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from tests.factories import actor, make_catalogue, make_cloud, make_experiment, make_user
from visa.actor import SYSTEM
from visa.errors import InvalidInput, QuotaExceeded
from visa.instances import service
from visa.instances.models import InstanceState
from visa.instances.schemas import CreateInstance
from visa.settings import Settings
from visa.users import service as users
from visa.users.models import Role


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path)


def _create(session, clock, settings, user, plan, experiments=(), **kw):
    data = CreateInstance(name="analysis", plan_id=plan.id, experiment_ids=[e.id for e in experiments], **kw)
    return service.create_instance(actor(user, clock), session, clock, settings, data)


def test_quota_and_unlimited(session: Session, clock, settings: Settings) -> None:
    medium_plan, _ = make_catalogue(session)
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


def test_create_rules(session: Session, clock, settings: Settings) -> None:
    medium_plan, gpu_plan = make_catalogue(session)
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
