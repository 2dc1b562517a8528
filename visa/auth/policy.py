"""Who may do what, as one table of small rules. What is not listed is denied.

Every service function starts with ``require(actor, action, target)``; the authorisation
matrix test reads this same table. Instance rules receive the instance; global rules
receive ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from visa.errors import Forbidden, NotFound
from visa.users.models import Role

if TYPE_CHECKING:
    from visa.actor import Actor
    from visa.instances.models import Instance, MemberRole


class Rule:
    def allows(self, actor: Actor, target: Any) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def __repr__(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class System(Rule):
    def allows(self, actor: Actor, target: Any) -> bool:
        return actor.is_system


@dataclass(frozen=True)
class HasRole(Rule):
    roles: tuple[Role, ...]

    def __init__(self, *roles: Role) -> None:
        object.__setattr__(self, "roles", roles)

    def allows(self, actor: Actor, target: Any) -> bool:
        return actor.has_role(*self.roles)

    def __repr__(self) -> str:
        return f"HasRole({', '.join(r.value for r in self.roles)})"


@dataclass(frozen=True)
class AnyUser(Rule):
    def allows(self, actor: Actor, target: Any) -> bool:
        return actor.user is not None


@dataclass(frozen=True)
class Interactive(Rule):
    """A user logged in through a browser session, not a token of any kind."""

    def allows(self, actor: Actor, target: Any) -> bool:
        return actor.user is not None and actor.credential == "session"


# What an identity provider's access token may be granted for (``Actor.idp_scopes``); the
# provider's own scope name for each is a setting (``oidc.token_scope``).
MINT_TOKENS = "tokens:create"


@dataclass(frozen=True)
class IdpScope(Rule):
    """A user whose identity provider's access token carries this grant."""

    scope: str

    def allows(self, actor: Actor, target: Any) -> bool:
        return actor.user is not None and actor.credential == "oidc_token" and self.scope in actor.idp_scopes

    def __repr__(self) -> str:
        return f"IdpScope({self.scope})"


@dataclass(frozen=True)
class Member(Rule):
    """A member of the instance, with one of the given member roles (any, if none given)."""

    member_roles: tuple[str, ...] = ()

    def __init__(self, *member_roles: str) -> None:
        object.__setattr__(self, "member_roles", member_roles)

    def allows(self, actor: Actor, target: Instance) -> bool:
        role = member_role(actor, target)
        return role is not None and (not self.member_roles or role in self.member_roles)

    def __repr__(self) -> str:
        return f"Member({', '.join(self.member_roles) or 'any'})"


@dataclass(frozen=True)
class SupportFor(Rule):
    """Support staff: admins and IT support everywhere, instrument scientists on their
    instruments, instrument control on experiments running within 7 days."""

    def allows(self, actor: Actor, target: Instance) -> bool:
        return support_allowed(actor, target)


def member_role(actor: Actor, instance: Instance) -> MemberRole | None:
    if actor.user is None:
        return None
    for m in instance.members:
        if m.user_id == actor.user.id:
            return m.role
    return None


def support_allowed(actor: Actor, instance: Instance, today: date | None = None) -> bool:
    if actor.user is None:
        return False
    if actor.has_role(Role.ADMIN, Role.IT_SUPPORT):
        return True
    if actor.has_role(Role.INSTRUMENT_SCIENTIST):
        uid = actor.user.id
        if any(uid in {s.id for s in e.instrument.scientists} for e in instance.experiments):
            return True
    if actor.has_role(Role.INSTRUMENT_CONTROL):
        today = today or date.today()
        week = timedelta(days=7)
        if any(e.start_date - week <= today <= e.end_date + week for e in instance.experiments):
            return True
    return False


ADMIN = HasRole(Role.ADMIN)

POLICY: dict[str, list[Rule]] = {
    # global actions
    "manage_users": [System(), ADMIN],
    "manage_roles": [System(), ADMIN],
    "manage_catalogue": [System(), ADMIN],
    "manage_clouds": [System(), ADMIN],
    "import_experiments": [System(), ADMIN],
    "view_all_instances": [System(), ADMIN],
    "view_audit": [System(), ADMIN],
    "handle_extensions": [System(), ADMIN],
    "manage_notifications": [System(), ADMIN],
    "create_instance": [AnyUser()],
    # A long-lived API token: from a browser session, or from a provider's token granted the
    # scope for it; never from another API token (a leaked one must not mint an unrevoked successor).
    "api_token.create": [Interactive(), IdpScope(MINT_TOKENS)],
    "search_open_data": [AnyUser()],  # embargo over: the data is public
    "create_instance_without_experiment": [System(), HasRole(Role.ADMIN, Role.STAFF, Role.GUEST)],
    # instance actions
    "instance.view": [System(), ADMIN, Member(), SupportFor()],
    "instance.control": [System(), ADMIN, Member("OWNER")],
    "instance.delete": [System(), ADMIN, Member("OWNER")],
    "instance.share": [Member("OWNER"), ADMIN],
    "instance.extend": [Member("OWNER"), ADMIN],
    # Support staff (admins included) connect as SUPPORT members: they join at once when the
    # owner is not staff, else once the owner approves (visa.instances.sharing).
    "instance.connect": [Member("OWNER", "USER", "GUEST", "SUPPORT")],
    "instance.input": [Member("OWNER", "USER", "SUPPORT")],  # GUEST: view only
    "instance.members.view": [System(), ADMIN, Member()],
    "instance.jupyter": [Member("OWNER")],
    "instance.thumbnail.write": [Member("OWNER")],
    "instance.request_support": [SupportFor()],
}


def allowed(actor: Actor, action: str, target: Any = None) -> bool:
    rules = POLICY.get(action)
    if rules is None:
        raise KeyError(f"no policy for action {action!r}")
    return any(rule.allows(actor, target) for rule in rules)


def require(actor: Actor, action: str, target: Any = None) -> None:
    """Raise unless the actor may do this. On instances one cannot even see, answer 404."""
    if allowed(actor, action, target):
        return
    if target is not None and action != "instance.view" and not allowed(actor, "instance.view", target):
        raise NotFound("no such instance")
    raise Forbidden(f"not allowed: {action}")
