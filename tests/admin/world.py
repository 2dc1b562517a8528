"""A small world for admin tests: an admin, users, a catalogue, instances in several states."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from tests.factories import make_cloud, make_experiment, make_flavour, make_image, make_plan, make_user
from visa.actor import actor_for
from visa.auth.tokens import create_api_token
from visa.catalogue.models import Plan
from visa.clock import Clock
from visa.clouds.models import Cloud
from visa.db import Database
from visa.instances.models import Instance, InstanceMember, InstanceState, MemberRole
from visa.users.models import Role, User


def make_instance(session: Session, clock: Clock, owner: User, plan: Plan, cloud: Cloud, *,
                  state: InstanceState = InstanceState.ACTIVE, name: str = "analysis", experiments=(),
                  age_hours: float = 1) -> Instance:
    created = clock.now() - timedelta(hours=age_hours)
    inst = Instance(
        uid=secrets.token_hex(6), name=name, owner=owner, plan=plan, cloud=cloud, state=state,
        secret=secrets.token_urlsafe(16), provider_state={}, created_at=created, state_changed_at=created,
        terminates_at=created + timedelta(days=14), last_seen_at=created, experiments=list(experiments),
        cloud_server_id=f"srv-{secrets.token_hex(3)}",
    )
    inst.members.append(InstanceMember(user=owner, role=MemberRole.OWNER, created_at=created))
    session.add(inst)
    session.flush()
    return inst


@dataclass
class World:
    admin_token: str
    user_token: str
    uids: dict[str, str]
    plan_id: int
    experiment_id: int


def build(db: Database, clock: Clock) -> World:
    with db.unit_of_work() as s:
        cloud = make_cloud(s, clock)
        admin = make_user(s, clock, "root", password="root-password", roles=(Role.ADMIN,), full_name="Ada Admin")
        alice = make_user(s, clock, "alice", password="alice-password", full_name="Alice Liddell",
                          email="alice@example.org")
        bob = make_user(s, clock, "bob", password="bob-password", full_name="Bob Builder")
        exp = make_experiment(s, members=[alice, bob], proposal="ev280")
        desktop, jupyter = make_image(s, "desktop"), make_image(s, "jupyterlab")
        medium, large = make_flavour(s, "esrf.medium", 4, 4096), make_flavour(s, "esrf.large", 16, 65536)
        p1 = make_plan(s, desktop, medium, preset=True)
        p2 = make_plan(s, jupyter, large)
        uids = {
            "a1": make_instance(s, clock, alice, p1, cloud, name="first", experiments=[exp], age_hours=5).uid,
            "a2": make_instance(s, clock, alice, p2, cloud, state=InstanceState.STOPPED, name="second",
                                age_hours=3).uid,
            "b1": make_instance(s, clock, bob, p1, cloud, state=InstanceState.ERROR, name="broken",
                                age_hours=1).uid,
        }
        _, admin_token = create_api_token(actor_for(admin, clock.now()), s, clock, name="admin")
        _, user_token = create_api_token(actor_for(alice, clock.now()), s, clock, name="alice")
        return World(admin_token, user_token, uids, p1.id, exp.id)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
