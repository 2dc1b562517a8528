"""Who is acting: a user (with their roles at that moment) or the system itself."""

from __future__ import annotations

from dataclasses import dataclass, field

from visa.users.models import STAFF_ROLES, Role, User


@dataclass(frozen=True)
class Actor:
    user: User | None
    roles: frozenset[Role] = field(default_factory=frozenset)
    name: str = "system"
    ip: str | None = None
    scopes: frozenset[str] | None = None  # None: a full session; else an API token's scopes
    credential: str = "session"  # how the request proved who it is: session, api_token or oidc_token
    idp_scopes: frozenset[str] = frozenset()  # what an identity provider's access token was granted

    @property
    def is_system(self) -> bool:
        return self.user is None

    @property
    def id(self) -> int | None:
        return self.user.id if self.user else None

    @property
    def is_admin(self) -> bool:
        return self.is_system or Role.ADMIN in self.roles

    @property
    def is_staff(self) -> bool:
        return self.is_system or bool(self.roles & STAFF_ROLES)

    def has_role(self, *roles: Role) -> bool:
        return bool(self.roles & set(roles))


SYSTEM = Actor(user=None, roles=frozenset(), name="system")


def actor_for(user: User, when, *, ip: str | None = None, scopes: frozenset[str] | None = None) -> Actor:  # noqa: ANN001
    return Actor(user=user, roles=frozenset(user.roles_at(when)), name=user.username, ip=ip, scopes=scopes)
