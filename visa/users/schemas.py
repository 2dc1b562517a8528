"""Answers about users to other users: only what sharing needs (no email, no ids, no roles)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from visa.paging import PageQuery
from visa.types import Input
from visa.users.models import GROUP_NAME_PATTERN, Role


class UserSearchQuery(BaseModel):
    q: str = Field("", max_length=100, description="Part of a username or full name")


class UserBrief(BaseModel):
    username: str
    full_name: str


class UserQuery(PageQuery):
    q: str | None = Field(None, max_length=100, description="Part of the username, name or email")
    role: Role | None = None


class GroupIn(Input):
    name: str = Field(pattern=GROUP_NAME_PATTERN, description="Letters, digits and . _ : @ - (up to 64)")
    description: str = Field("", max_length=200)


class GroupMemberIn(Input):
    username: str = Field(min_length=1, max_length=32)


class GroupMemberOut(BaseModel):
    username: str
    source: str = Field(description="ADMIN (added by an administrator) or IDP (from the identity provider's claim)")


class GroupOut(BaseModel):
    name: str
    description: str
    members: list[GroupMemberOut]
