"""What makes a login session valid: its server-side row, and the user's epoch in the cookie.

The one check of a session cookie: pages, the API, the event stream and the gateway use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from visa.users import service as users
from visa.users.models import LoginSession, User


def session_epoch(user: User) -> str:
    # Belt and braces next to the session row: a changed password or account ends its sessions.
    return (user.password_hash or "")[-12:] + str(user.active)


def session_user(s: Session, data: Mapping[str, Any], now: datetime) -> tuple[User, LoginSession] | None:
    """The user and login session of a decoded session cookie, while it has not ended."""
    found = users.live_login_session_and_user(s, data.get("sid"), data.get("user_id"))
    if found is None:
        return None
    row, user = found
    if not user.active or data.get("epoch") != session_epoch(user):
        return None
    return user, row
