"""Catalogue rules on both databases: plan filtering by role and instrument, lifetime resolution."""

from __future__ import annotations

from sqlalchemy.orm import Session

from tests.factories import actor, make_catalogue, make_experiment, make_flavour, make_user
from visa.actor import SYSTEM
from visa.catalogue.service import inactivity_limit_hours, max_lifetime_hours, plans_for
from visa.settings import LifetimeSettings
from visa.users.models import Role

DEFAULTS = LifetimeSettings()


def test_plans_filtered_by_role_and_instrument(session: Session, clock) -> None:
    medium_plan, gpu_plan = make_catalogue(session)
    alice = make_user(session, clock, "alice")
    carol = make_user(session, clock, "carol", roles=(Role.SCIENTIFIC_COMPUTING,))
    on_id21 = make_experiment(session, members=[alice], instrument="id21")
    on_id16a = make_experiment(session, members=[alice], instrument="id16a")

    assert plans_for(actor(alice, clock), session, [on_id21]) == [medium_plan]
    assert set(plans_for(actor(alice, clock), session, [on_id21, on_id16a])) == {medium_plan, gpu_plan}
    assert set(plans_for(actor(carol, clock), session, [])) == {medium_plan, gpu_plan}
    assert set(plans_for(SYSTEM, session, [])) == {medium_plan, gpu_plan}


def test_lifetime_is_the_maximum_of_the_rules_that_apply(session: Session, clock) -> None:
    _, gpu_plan = make_catalogue(session)
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
