"""One page of a long list: the query every listing takes, the answer it gives, and the SQL for it."""

from __future__ import annotations

from typing import Any, Generic, NamedTuple, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from visa.types import Input

T = TypeVar("T")

MAX_PER_PAGE = 200
# Lists that may hold 100,000 rows count their matches up to here: counting them all costs
# PostgreSQL ~8 ms on every page view (most of an admin page's time); past it, the page says
# "more than" and the pages go on while they are full.
COUNT_LIMIT = 10_000


class PageQuery(Input):
    page: int = Field(1, ge=1, le=100_000)
    per_page: int = Field(50, ge=1, le=MAX_PER_PAGE)


class Page(BaseModel, Generic[T]):  # Python 3.11
    items: list[T]
    total: int
    page: int
    per_page: int
    total_exact: bool = Field(True, description="false: at least `total` match (counting stopped there)")


class Total(NamedTuple):
    """How many rows match: ``count`` itself, or (``exact`` false) at least ``count``."""

    count: int
    exact: bool = True

    def last_page(self, per_page: int, page: int, full: bool) -> int | None:
        """The last page's number, or None when unknown (past the count, the page being full)."""
        if self.exact:
            return max(1, -(-self.count // per_page))
        return None if full or page * per_page < self.count else page


def count_upto(session: Session, query: Select[Any], limit: int | None = None) -> Total:
    """How many rows ``query`` selects, counted up to ``limit`` (default ``COUNT_LIMIT``): an
    index scan that stops there."""
    limit = COUNT_LIMIT if limit is None else limit
    n = session.scalar(select(func.count()).select_from(query.order_by(None).limit(limit + 1).subquery())) or 0
    return Total(limit, exact=False) if n > limit else Total(int(n))


def page_of(session: Session, query: Select[Any], page: int, per_page: int) -> tuple[list[Any], int]:
    """One page of the rows ``query`` selects, and how many there are in all."""
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    items = list(session.scalars(query.limit(per_page).offset((page - 1) * per_page)).unique())
    return items, int(total)


def escape_like(text: str) -> str:
    """``text`` taken literally inside a LIKE pattern (with ``escape="\\"``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
