"""A small world for authorisation tests: one instance and every kind of actor around it."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

from tests.factories import (
    actor,
    empty_database,
    make_cloud,
    make_experiment,
    make_flavour,
    make_image,
    make_plan,
    make_user,
)
from visa.auth.sessions import open_login_session, session_epoch
from visa.auth.tokens import create_api_token
from visa.clock import Clock
from visa.instances import service
from visa.instances.models import Instance, InstanceMember, MemberRole
from visa.instances.schemas import CreateInstance
from visa.settings import Settings
from visa.sharing import service as sharing
from visa.users.models import Role, User

PASSWORD = "correct-horse-battery"
# name -> (roles, member role on the instance)
PEOPLE: dict[str, tuple[tuple[Role, ...], MemberRole | None]] = {
    "owner": ((Role.STAFF,), MemberRole.OWNER),  # staff: support needs their approval
    "member": ((), MemberRole.USER),
    "guest": ((), MemberRole.GUEST),
    "support": ((Role.IT_SUPPORT,), MemberRole.SUPPORT),
    "admin": ((Role.ADMIN,), None),
    "other": ((), None),
    "helpdesk": ((Role.IT_SUPPORT,), None),
}


@dataclass
class World:
    uid: str  # owned by "owner" (staff), shared with member, guest, support
    plan_id: int
    experiment_id: int
    other_uid: str  # owned by "other" (not staff): nobody else's business
    owner_token_id: int


def _instance(s: Session, clock: Clock, owner, plan_id: int, exp_ids: list[int], settings: Settings,
              *, own_home: bool = False) -> Instance:
    data = CreateInstance(name=f"{owner.username}'s machine", plan_id=plan_id, experiment_ids=exp_ids,
                          own_home=own_home)
    return service.create_instance(actor(owner, clock), s, clock, settings, data)


def seed(db, clock: Clock) -> World:
    settings = Settings(database_url=db.url, secret_key="x")
    with db.unit_of_work() as s:
        make_cloud(s, clock)
        users = {name: make_user(s, clock, name, roles=roles, full_name=f"{name.title()} Person")
                 for name, (roles, _) in PEOPLE.items()}
        for user in users.values():
            user.password_hash = _password_hash()
        exp = make_experiment(s, members=[users["owner"], users["other"]], start=date(2026, 1, 5))
        plan = make_plan(s, make_image(s), make_flavour(s, "esrf.medium"), preset=True)
        # Shared with people who type: a machine with a home of its own.
        inst = _instance(s, clock, users["owner"], plan.id, [exp.id], settings, own_home=True)
        for name, (_, mrole) in PEOPLE.items():
            if mrole not in (None, MemberRole.OWNER):
                inst.members.append(InstanceMember(user=users[name], role=mrole, created_at=clock.now()))
        others = _instance(s, clock, users["other"], plan.id, [exp.id], settings)
        s.flush()
        # helpdesk asked for support access to owner's machine; owner has not answered yet
        sharing.request_support_access(actor(users["helpdesk"], clock), s, clock, inst)
        token, _ = create_api_token(actor(users["owner"], clock), s, clock, name="script")
        return World(inst.uid, plan.id, exp.id, others.uid, token.id)


@functools.cache
def _password_hash() -> str:
    return generate_password_hash(PASSWORD)  # once: hashing is deliberately slow


def login(api_client, db, name: str):
    """A client with a logged-in session for ``name`` (as /api/login would leave it), fast."""
    c = api_client()
    if name == "anonymous":
        return c
    with db.unit_of_work() as s:
        user = s.scalar(select(User).where(User.username == name))
        epoch = session_epoch(user)
        user_id = user.id
        _, sid = open_login_session(s, user, datetime.now(UTC), method="local")
    with c.client.session_transaction() as sess:
        sess["user_id"], sess["epoch"], sess["sid"], sess["csrf"] = user_id, epoch, sid, "test-csrf"
    c.csrf = "test-csrf"
    return c


def reset(db) -> None:
    """Empty every table (as the committed database is after a test)."""
    empty_database(db)


__all__ = ["PASSWORD", "PEOPLE", "World", "login", "reset", "seed"]
