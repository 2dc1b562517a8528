"""Input and answers of the login and API token endpoints."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from visa.types import Timestamp

MAX_TOKEN_DAYS = 365


class LoginForm(BaseModel):
    model_config = ConfigDict(extra="ignore")

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    scopes: str = Field("api", max_length=100, description="'api' (read and write) or 'api:read' (GET only)")
    expires_in_days: int = Field(90, ge=1, le=MAX_TOKEN_DAYS)


class MeOut(BaseModel):
    username: str
    full_name: str
    email: str | None
    roles: list[str]
    instance_quota: int
    csrf_token: str


class LogoutOut(BaseModel):
    ok: bool = True
    next: str = Field(description="Where the browser goes next (the identity provider's logout, or the login page)")


class TokenOut(BaseModel):
    """A personal API token: never its hash, never its value."""

    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: Timestamp
    expires_at: Timestamp | None
    last_used_at: Timestamp | None
    revoked_at: Timestamp | None


class NewTokenOut(TokenOut):
    token: str = Field(description="The secret value, shown once")
