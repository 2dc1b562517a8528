"""Who is acting: a user (with their roles at that moment), the system itself, or nobody yet."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from visa.policy.roles import ActorKind, Role
from visa.users.models import User


@dataclass(frozen=True)
class Actor:
    user: User | None
    roles: frozenset[Role] = field(default_factory=frozenset)
    name: str = "system"
    ip: str | None = None
    scopes: frozenset[str] | None = None  # None: a full session; else an API token's scopes
    credential: str = "session"  # how the request proved who it is: session, api_token or oidc_token
    idp_scopes: frozenset[str] = frozenset()  # what an identity provider's access token was granted
    # Stated, never inferred from a missing user: an anonymous caller must not pass as the system.
    kind: ActorKind = ActorKind.USER
    at: datetime | None = None  # when the roles were read: the moment time-bound rules use

    def __post_init__(self) -> None:
        if (self.kind is ActorKind.USER) != (self.user is not None):
            raise ValueError(f"a {self.kind.value} actor {'needs' if self.kind is ActorKind.USER else 'has no'} user")

    @property
    def is_system(self) -> bool:
        return self.kind is ActorKind.SYSTEM

    @property
    def id(self) -> int | None:
        return self.user.id if self.user else None


SYSTEM = Actor(user=None, roles=frozenset(), name="system", kind=ActorKind.SYSTEM)


def actor_for(user: User, when: datetime, *, ip: str | None = None, scopes: frozenset[str] | None = None) -> Actor:
    return Actor(user=user, roles=frozenset(user.roles_at(when)), name=user.username, ip=ip, scopes=scopes, at=when)
