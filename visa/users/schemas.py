"""Answers about users to other users: only what sharing needs (no email, no ids, no roles)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from visa.paging import PageQuery
from visa.users.models import Role


class UserSearchQuery(BaseModel):
    q: str = Field("", max_length=100, description="Part of a username or full name")


class UserBrief(BaseModel):
    username: str
    full_name: str


class UserQuery(PageQuery):
    q: str | None = Field(None, max_length=100, description="Part of the username, name or email")
    role: Role | None = None
