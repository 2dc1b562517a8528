"""The policy table on its own: actor kinds, the moment rules are asked at, token scopes, and
the permissions page generated from it."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from visa.actor import SYSTEM, Actor
from visa.auth.login import anonymous
from visa.policy import POLICY, ActorKind, Role, allowed
from visa.policy.doc import markdown
from visa.users.models import User

ROOT = Path(__file__).resolve().parents[2]


# Plain values with the shape the rules read (visa.policy.rules.InstanceTarget): the rules
# are pure functions of them, so no database is needed to say what they decide.
@dataclass
class _Person:
    id: int


@dataclass
class _Instrument:
    scientists: list[_Person] = field(default_factory=list)


@dataclass
class _Experiment:
    start_date: date
    end_date: date
    instrument: _Instrument = field(default_factory=_Instrument)


@dataclass
class _Member:
    user_id: int
    role: str


@dataclass
class _Instance:
    members: list[_Member] = field(default_factory=list)
    experiments: list[_Experiment] = field(default_factory=list)


def _user(uid: int, *roles: Role, at: datetime | None = None, scopes: frozenset[str] | None = None) -> Actor:
    user = User(id=uid, username=f"u{uid}")
    return Actor(user=user, roles=frozenset(roles), name=user.username, scopes=scopes, at=at)


def test_an_anonymous_actor_is_granted_nothing_the_system_is() -> None:
    nobody = anonymous("root", "203.0.113.9")
    assert nobody.kind is ActorKind.ANONYMOUS and not nobody.is_system
    instance = _Instance(members=[_Member(1, "OWNER")])
    let_through = [a for a in POLICY if allowed(nobody, a, instance if a.startswith("instance.") else None)]
    assert let_through == [], let_through
    assert allowed(SYSTEM, "manage_users") and allowed(SYSTEM, "instance.delete", instance)


def test_an_actor_states_its_kind() -> None:
    with pytest.raises(ValueError, match="user"):
        Actor(user=None)  # no user and no kind: neither the system nor anyone
    with pytest.raises(ValueError, match="user"):
        Actor(user=_user(1).user, kind=ActorKind.SYSTEM)


def test_instrument_control_is_judged_at_the_moment_given_not_the_wall_clock() -> None:
    instance = _Instance(experiments=[_Experiment(date(2020, 3, 10), date(2020, 3, 12))])
    control = _user(7, Role.INSTRUMENT_CONTROL, at=datetime(2020, 3, 1, tzinfo=UTC))  # 9 days before
    assert not allowed(control, "instance.request_support", instance)
    assert allowed(control, "instance.request_support", instance, now=datetime(2020, 3, 4, tzinfo=UTC))
    assert allowed(control, "instance.view", instance, now=datetime(2020, 3, 19, tzinfo=UTC))
    assert not allowed(control, "instance.view", instance, now=datetime(2020, 3, 20, tzinfo=UTC))
    # Without a moment, no time-bound grant (never today's date in its place).
    assert not allowed(_user(7, Role.INSTRUMENT_CONTROL), "instance.view", instance)


def test_a_read_only_token_is_refused_by_the_table() -> None:
    instance = _Instance(members=[_Member(3, "OWNER")])
    reader = _user(3, scopes=frozenset({"api:read"}))
    writer = _user(3, scopes=frozenset({"api"}))
    session = _user(3)
    assert not allowed(reader, "instance.connect", instance) and not allowed(reader, "api.write")
    assert allowed(writer, "instance.connect", instance) and allowed(session, "instance.connect", instance)
    assert allowed(reader, "instance.view", instance)


def test_admin_shortcuts_are_rules_of_the_table() -> None:
    admin, user = _user(1, Role.ADMIN), _user(2, Role.STAFF)
    for action in ("experiments.use_any", "catalogue.all_plans", "api_token.revoke_any", "view_cloud_status"):
        assert allowed(admin, action) and allowed(SYSTEM, action), action
        assert not allowed(user, action), action


def test_no_role_shortcut_outside_the_policy() -> None:
    """Who may do what is decided by the table alone: nothing else asks an actor for admin-ness."""
    shortcuts = {"is_admin", "is_staff", "has_role"}
    found = []
    for path in sorted((ROOT / "visa").rglob("*.py")):
        if path.is_relative_to(ROOT / "visa" / "policy"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in shortcuts:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert not found, found


def test_the_permissions_page_is_generated_from_the_table() -> None:
    committed = (ROOT / "docs" / "permissions.md").read_text()
    assert committed == markdown(), "run: python -m visa.policy.doc > docs/permissions.md"
    for action in POLICY:
        assert f"| `{action}` |" in committed
