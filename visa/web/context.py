"""Per-request plumbing: one transaction per request and the current actor.

Handlers call ``db_session()`` and ``current_actor()``; the transaction is committed after
a successful response and rolled back on any error, then after-commit actions run.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from flask import Flask, current_app, g, request, session
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.auth.sessions import end_login_session, open_login_session, session_epoch, session_user
from visa.db import end_unit_of_work
from visa.errors import Unauthorized
from visa.services import Services
from visa.users.models import LoginSession, Role, User


def services() -> Services:
    return current_app.extensions["visa"]  # type: ignore[no-any-return]


def db_session() -> Session:
    if "db_session" not in g:
        g.db_session = services().database.sessionmaker()
    return g.db_session  # type: ignore[no-any-return]


def current_actor(required: bool = True) -> Actor | None:
    if "actor" not in g:
        g.actor = _resolve_actor()
    if g.actor is None and required:
        raise Unauthorized("log in first")
    return g.actor  # type: ignore[no-any-return]


def _resolve_actor() -> Actor | None:
    from visa.auth.tokens import actor_from_bearer  # late: auth depends on the web context

    now = services().clock.now()
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return actor_from_bearer(db_session(), services(), header[7:].strip(), ip=request.remote_addr)
    if session.get("user_id") is None:
        return None
    found = session_user(db_session(), session, now)
    if found is None:
        session.clear()
        return None
    user, row = found
    g.login_session = row
    roles = frozenset(user.roles_at(now)) | frozenset(row.idp_roles_set())
    return Actor(user=user, roles=roles, name=user.username, ip=request.remote_addr, at=now)


def current_login() -> LoginSession | None:
    """The server-side session of this browser request (None: anonymous or a bearer token)."""
    current_actor(required=False)
    return g.get("login_session")


def login_session(user: User, method: str = "local", *, refresh_token: str | None = None,
                  refresh_at: datetime | None = None, idp_roles: Iterable[Role] = ()) -> LoginSession:
    """Open a server-side session for the user; the cookie carries only its id. A session this
    browser had before ends (no fixation, no orphan)."""
    end_login_session(db_session(), session.get("sid"))
    session.clear()
    row, sid = open_login_session(
        db_session(), user, services().clock.now(), method=method, ip=request.remote_addr,
        refresh_token=refresh_token, refresh_at=refresh_at, idp_roles=idp_roles,
    )
    session["user_id"] = user.id
    session["sid"] = sid
    session["epoch"] = session_epoch(user)
    session.permanent = True
    g.pop("actor", None)
    g.login_session = row
    return row


def logout_session() -> None:
    """End this browser's session on the server (a copied cookie stops working too)."""
    end_login_session(db_session(), session.get("sid"))
    session.clear()
    g.pop("actor", None)
    g.pop("login_session", None)


def install(app: Flask) -> None:
    @app.after_request
    def _commit(response):
        # Commit before the response leaves, so a failed commit is never reported as success;
        # the teardown ends the unit of work (rolls back an error's, runs a commit's actions).
        s: Session | None = g.get("db_session")
        if s is not None and response.status_code < 400:
            s.commit()
            g.committed = True
        return response

    @app.teardown_request
    def _finish(exc: BaseException | None) -> None:
        s: Session | None = g.pop("db_session", None)
        if s is not None:
            end_unit_of_work(s, committed=g.pop("committed", False) and exc is None)
