"""The small rules the policy table is made of, and what they need to know of their targets.

Rules read their targets through the protocols below, never through the feature models,
so every feature's service can import the policy without importing upwards. A rule gets
the moment it is asked at (from the caller's clock, else the moment the actor was read).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from visa.policy.roles import ActorKind, Role


class Principal(Protocol):
    @property
    def id(self) -> int: ...


class PolicyActor(Protocol):
    """What the rules read of ``visa.actor.Actor``."""

    @property
    def kind(self) -> ActorKind: ...
    @property
    def user(self) -> Principal | None: ...
    @property
    def roles(self) -> frozenset[Role]: ...
    @property
    def credential(self) -> str: ...
    @property
    def scopes(self) -> frozenset[str] | None: ...
    @property
    def idp_scopes(self) -> frozenset[str]: ...
    @property
    def at(self) -> datetime | None: ...


class Membership(Protocol):
    @property
    def user_id(self) -> int: ...
    @property
    def role(self) -> str: ...


class Instrument(Protocol):
    @property
    def scientists(self) -> Iterable[Principal]: ...


class Experiment(Protocol):
    @property
    def instrument(self) -> Instrument: ...
    @property
    def start_date(self) -> date: ...
    @property
    def end_date(self) -> date: ...


class InstanceTarget(Protocol):
    """What instance rules read of ``visa.instances.models.Instance``."""

    @property
    def members(self) -> Iterable[Membership]: ...
    @property
    def experiments(self) -> Iterable[Experiment]: ...


class SharedTarget(Protocol):
    """What the owner-presence rule reads of an instance."""

    @property
    def members_need_owner(self) -> bool: ...
    def owner_connected(self, now: datetime) -> bool: ...


class Rule:
    def allows(self, actor: PolicyActor, target: Any, now: datetime | None) -> bool:  # pragma: no cover
        raise NotImplementedError

    def __and__(self, other: Rule) -> Rule:
        return All((self, other))

    def __repr__(self) -> str:
        return type(self).__name__


@dataclass(frozen=True, repr=False)
class All(Rule):
    """Every one of the rules: a grant narrowed by a condition (a token's scope)."""

    rules: tuple[Rule, ...]

    def allows(self, actor: PolicyActor, target: Any, now: datetime | None) -> bool:
        return all(rule.allows(actor, target, now) for rule in self.rules)

    def __repr__(self) -> str:
        return " & ".join(repr(r) for r in self.rules)


@dataclass(frozen=True, repr=False)
class System(Rule):
    """The system itself (scheduler, CLI): never an anonymous caller."""

    def allows(self, actor: PolicyActor, target: Any, now: datetime | None) -> bool:
        return actor.kind is ActorKind.SYSTEM


@dataclass(frozen=True, repr=False)
class HasRole(Rule):
    """A user holding one of these roles (granted in visa, or from the identity provider)."""

    roles: tuple[Role, ...]

    def __init__(self, *roles: Role) -> None:
        object.__setattr__(self, "roles", roles)

    def allows(self, actor: PolicyActor, target: Any, now: datetime | None) -> bool:
        return actor.kind is ActorKind.USER and bool(actor.roles & set(self.roles))

    def __repr__(self) -> str:
        return f"HasRole({', '.join(r.value for r in self.roles)})"


@dataclass(frozen=True, repr=False)
class LacksRole(Rule):
    """A user holding none of these roles."""

    roles: tuple[Role, ...]

    def __init__(self, *roles: Role) -> None:
        object.__setattr__(self, "roles", roles)

    def allows(self, actor: PolicyActor, target: Any, now: datetime | None) -> bool:
        return actor.kind is ActorKind.USER and not actor.roles & set(self.roles)

    def __repr__(self) -> str:
        return f"LacksRole({', '.join(r.value for r in self.roles)})"


@dataclass(frozen=True, repr=False)
class AnyUser(Rule):
    """Any logged-in user."""

    def allows(self, actor: PolicyActor, target: Any, now: datetime | None) -> bool:
        return actor.kind is ActorKind.USER and actor.user is not None


@dataclass(frozen=True, repr=False)
class Interactive(Rule):
    """A user logged in through a browser session, not a token of any kind."""

    def allows(self, actor: PolicyActor, target: Any, now: datetime | None) -> bool:
        return actor.kind is ActorKind.USER and actor.credential == "session"


@dataclass(frozen=True, repr=False)
class IdpScope(Rule):
    """A user whose identity provider's access token carries this grant."""

    scope: str

    def allows(self, actor: PolicyActor, target: Any, now: datetime | None) -> bool:
        return (
            actor.kind is ActorKind.USER
            and actor.credential == "oidc_token"
            and self.scope in actor.idp_scopes
        )

    def __repr__(self) -> str:
        return f"IdpScope({self.scope})"


@dataclass(frozen=True, repr=False)
class TokenScope(Rule):
    """Anyone but a caller with a personal API token lacking this scope (sessions hold every scope)."""

    scope: str

    def allows(self, actor: PolicyActor, target: Any, now: datetime | None) -> bool:
        return actor.scopes is None or self.scope in actor.scopes

    def __repr__(self) -> str:
        return f"TokenScope({self.scope})"


@dataclass(frozen=True, repr=False)
class Member(Rule):
    """A member of the instance, with one of the given member roles (any, if none given)."""

    member_roles: tuple[str, ...] = ()

    def __init__(self, *member_roles: str) -> None:
        object.__setattr__(self, "member_roles", member_roles)

    def allows(self, actor: PolicyActor, target: InstanceTarget, now: datetime | None) -> bool:
        role = member_role(actor, target)
        return role is not None and (not self.member_roles or role in self.member_roles)

    def __repr__(self) -> str:
        return f"Member({', '.join(self.member_roles) or 'any'})"


@dataclass(frozen=True, repr=False)
class SupportFor(Rule):
    """Support staff: admins, IT support and scientific computing everywhere, instrument
    scientists on their instruments, instrument control on experiments running within 7 days."""

    def allows(self, actor: PolicyActor, target: InstanceTarget, now: datetime | None) -> bool:
        return support_allowed(actor, target, now)


@dataclass(frozen=True, repr=False)
class OwnerPresent(Rule):
    """The owner is connected, or the instance lets its members in alone (VISA's unrestricted
    member access, per image or per instance)."""

    def allows(self, actor: PolicyActor, target: SharedTarget, now: datetime | None) -> bool:
        if not target.members_need_owner:
            return True
        moment = now or actor.at
        return moment is not None and target.owner_connected(moment)


class HomeTarget(Protocol):
    """What the acting-members rule reads of an instance."""

    @property
    def members_may_act(self) -> bool: ...


@dataclass(frozen=True, repr=False)
class MembersMayAct(Rule):
    """The machine lets members other than the owner act in it: it has a home of its own, or the
    facility accepted their acting in the owner's shared home (``visa.instances.models.InstanceHome``)."""

    def allows(self, actor: PolicyActor, target: HomeTarget, now: datetime | None) -> bool:
        return bool(target.members_may_act)


class BookingTarget(Protocol):
    """What booking rules read of ``visa.bookings.models.Booking``."""

    @property
    def user_id(self) -> int: ...
    @property
    def instruments(self) -> Iterable[Instrument]: ...


@dataclass(frozen=True, repr=False)
class Requester(Rule):
    """The user who asked for the booking."""

    def allows(self, actor: PolicyActor, target: BookingTarget, now: datetime | None) -> bool:
        return actor.kind is ActorKind.USER and actor.user is not None and target.user_id == actor.user.id


@dataclass(frozen=True, repr=False)
class ScientistOf(Rule):
    """An instrument scientist of an instrument the booking's beamtime is on."""

    def allows(self, actor: PolicyActor, target: BookingTarget, now: datetime | None) -> bool:
        if actor.kind is not ActorKind.USER or actor.user is None or Role.INSTRUMENT_SCIENTIST not in actor.roles:
            return False
        uid = actor.user.id
        return any(uid in {s.id for s in i.scientists} for i in target.instruments)


def member_role(actor: PolicyActor, instance: InstanceTarget) -> Any:
    """The actor's member role on the instance (a ``MemberRole``), or None."""
    if actor.kind is not ActorKind.USER or actor.user is None:
        return None
    for m in instance.members:
        if m.user_id == actor.user.id:
            return m.role
    return None


def support_allowed(actor: PolicyActor, instance: InstanceTarget, now: datetime | None = None) -> bool:
    if actor.kind is not ActorKind.USER or actor.user is None:
        return False
    roles = actor.roles
    if roles & {Role.ADMIN, Role.IT_SUPPORT, Role.SCIENTIFIC_COMPUTING}:
        return True
    if Role.INSTRUMENT_SCIENTIST in roles:
        uid = actor.user.id
        if any(uid in {s.id for s in e.instrument.scientists} for e in instance.experiments):
            return True
    if Role.INSTRUMENT_CONTROL in roles:
        moment = now or actor.at
        if moment is None:  # no moment known: no time-bound grant
            return False
        today = moment.date()
        week = timedelta(days=7)
        if any(e.start_date - week <= today <= e.end_date + week for e in instance.experiments):
            return True
    return False
