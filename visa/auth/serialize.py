"""The caller and their API tokens as the API shows them."""

from __future__ import annotations

from visa.auth.schemas import MeOut, TokenOut
from visa.users.models import ApiToken, User


def me_out(user: User, roles: list[str], csrf_token: str) -> MeOut:
    return MeOut(username=user.username, full_name=user.full_name, email=user.email, roles=roles,
                 instance_quota=user.instance_quota, csrf_token=csrf_token)


def token_out(token: ApiToken) -> TokenOut:
    return TokenOut(
        id=token.id, name=token.name, prefix=token.prefix, scopes=token.scopes.split(),
        created_at=token.created_at, expires_at=token.expires_at,
        last_used_at=token.last_used_at, revoked_at=token.revoked_at,
    )
