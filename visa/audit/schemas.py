"""The audit log as the API reads it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from visa.paging import PageQuery
from visa.types import Timestamp


class AuditOut(BaseModel):
    id: int
    at: Timestamp
    actor: str
    action: str
    target_type: str | None
    target_id: str | None
    details: dict[str, Any]
    ip: str | None


class AuditQuery(PageQuery):
    action: str | None = Field(None, max_length=64, description="Exact action, or a prefix ending in '.'")
    actor: str | None = Field(None, max_length=64)
    target_type: str | None = Field(None, max_length=32)
    target_id: str | None = Field(None, max_length=64)
    since: datetime | None = None
    until: datetime | None = None
