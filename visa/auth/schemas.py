"""Input of the login and API token endpoints (parsed by the handlers, documented by the OpenAPI)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

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
