"""One page of a long list: the query every listing takes, the answer it gives, and the SQL for it."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

T = TypeVar("T")

MAX_PER_PAGE = 200


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    page: int = Field(1, ge=1, le=100_000)
    per_page: int = Field(50, ge=1, le=MAX_PER_PAGE)


class Page(BaseModel, Generic[T]):  # noqa: UP046 (Python 3.11)
    items: list[T]
    total: int
    page: int
    per_page: int


def page_of(session: Session, query: Select[Any], page: int, per_page: int) -> tuple[list[Any], int]:
    """One page of the rows ``query`` selects, and how many there are in all."""
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    items = list(session.scalars(query.limit(per_page).offset((page - 1) * per_page)).unique())
    return items, int(total)


def escape_like(text: str) -> str:
    """``text`` taken literally inside a LIKE pattern (with ``escape="\\"``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
