"""Per-request plumbing: one transaction per request and the current actor.

Handlers call ``db_session()`` and ``current_actor()``; the transaction is committed after
a successful response and rolled back on any error, then after-commit actions run.
"""

from __future__ import annotations

from flask import Flask, current_app, g, request, session
from sqlalchemy.orm import Session

from visa.actor import Actor, actor_for
from visa.errors import Unauthorized
from visa.services import Services
from visa.users.models import User


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
    user_id = session.get("user_id")
    if user_id is None:
        return None
    user = db_session().get(User, user_id)
    if user is None or not user.active or session.get("epoch") != _session_epoch(user):
        session.clear()
        return None
    return actor_for(user, now, ip=request.remote_addr)


def _session_epoch(user: User) -> str:
    # Sessions die when the password or the account changes.
    return (user.password_hash or "")[-12:] + str(user.active)


def login_session(user: User) -> None:
    session.clear()
    session["user_id"] = user.id
    session["epoch"] = _session_epoch(user)
    session.permanent = True


def install(app: Flask) -> None:
    @app.after_request
    def _commit(response):  # noqa: ANN001, ANN202
        # Commit before the response leaves, so a failed commit is never reported as success.
        s: Session | None = g.get("db_session")
        if s is not None:
            if response.status_code < 400:
                s.commit()
                g.committed = True
            else:
                s.rollback()
        return response

    @app.teardown_request
    def _finish(exc: BaseException | None) -> None:
        s: Session | None = g.pop("db_session", None)
        if s is None:
            return
        committed = g.pop("committed", False) and exc is None
        if not committed:
            s.rollback()
        actions = s.info.pop("after_commit", [])
        s.close()
        if committed:
            for action in actions:
                action()
