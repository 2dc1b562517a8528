"""Local accounts: log in and out (JSON and form), and who am I."""

from __future__ import annotations

from flask import Blueprint, jsonify, session
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from visa.actor import actor_for
from visa.audit.service import record
from visa.errors import Forbidden, Unauthorized
from visa.users.models import User
from visa.users.service import check_password
from visa.web.context import current_actor, db_session, login_session, services
from visa.web.csrf import csrf_token
from visa.web.io import parse_body

bp = Blueprint("auth_api", __name__)


class LoginForm(BaseModel):
    model_config = ConfigDict(extra="ignore")

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


@bp.post("/api/login")
def login():  # noqa: ANN201
    svc = services()
    if not svc.settings.uses_local_accounts:
        raise Forbidden("local accounts are switched off: log in with the identity provider")
    form = parse_body(LoginForm)
    s = db_session()
    user = s.scalar(select(User).where(User.username == form.username))
    if user is None or not check_password(user, form.password):
        raise Unauthorized("wrong username or password")
    now = svc.clock.now()
    user.last_login_at = now
    login_session(user)
    record(s, actor_for(user, now), svc.clock, "login", target_type="user", target_id=user.id, method="local")
    return jsonify({**_me(user), "csrf_token": csrf_token()})


@bp.post("/api/logout")
def logout():  # noqa: ANN201
    session.clear()
    return jsonify({"ok": True})


@bp.get("/api/me")
def me():  # noqa: ANN201
    actor = current_actor()
    assert actor.user is not None
    return jsonify({**_me(actor.user), "csrf_token": csrf_token()})


def _me(user: User) -> dict[str, object]:
    roles = sorted(r.value for r in user.roles_at(services().clock.now()))
    return {
        "username": user.username, "full_name": user.full_name, "email": user.email,
        "roles": roles, "instance_quota": user.instance_quota,
    }
