"""Finding users to share an instance with: by username or name, a few at a time."""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.errors import InvalidInput, Unauthorized
from visa.policy import require
from visa.users.models import User

MIN_QUERY = 2
MAX_QUERY = 64
MAX_RESULTS = 20


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_users(actor: Actor, session: Session, query: str, limit: int = MAX_RESULTS) -> list[User]:
    """Active users whose username starts with, or whose full name contains, ``query``."""
    if actor.user is None:
        raise Unauthorized("log in first")
    require(actor, "users.search")
    q = (query or "").strip().lower()
    if not MIN_QUERY <= len(q) <= MAX_QUERY:
        raise InvalidInput(f"the search needs {MIN_QUERY} to {MAX_QUERY} characters", field="q")
    pattern = _like(q)
    return list(
        session.scalars(
            select(User)
            .where(
                User.active.is_(True),
                or_(User.username.like(f"{pattern}%", escape="\\"),
                    func.lower(User.full_name).like(f"%{pattern}%", escape="\\")),
            )
            .order_by(User.username)
            .limit(min(limit, MAX_RESULTS))
        )
    )
