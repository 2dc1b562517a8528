"""REST of identity: local login and logout (JSON), who am I, personal API tokens."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import Blueprint, jsonify
from sqlalchemy import select

from visa.auth import tokens, web
from visa.auth.login import local_login
from visa.auth.schemas import LoginForm, NewToken
from visa.errors import Forbidden
from visa.policy import require
from visa.users.models import ApiToken, User
from visa.web.context import current_actor, db_session, login_session, services
from visa.web.csrf import csrf_token
from visa.web.io import parse_body

bp = Blueprint("auth_api", __name__)

@bp.post("/api/login")
def login():  # noqa: ANN201
    svc = services()
    if not svc.settings.uses_local_accounts:
        raise Forbidden("local accounts are switched off: log in with the identity provider")
    form = parse_body(LoginForm)
    user = local_login(db_session(), svc, web.limits(), form.username, form.password, web.client_ip())
    login_session(user, "local")
    return jsonify({**_me(user), "csrf_token": csrf_token()})


@bp.post("/api/logout")
def logout():  # noqa: ANN201
    from visa.auth.pages import end_session

    return jsonify({"ok": True, "next": end_session()})


@bp.get("/api/me")
def me():  # noqa: ANN201
    actor = current_actor()
    assert actor.user is not None
    return jsonify({**_me(actor.user, sorted(r.value for r in actor.roles)), "csrf_token": csrf_token()})


def _me(user: User, roles: list[str] | None = None) -> dict[str, object]:
    if roles is None:
        roles = sorted(r.value for r in user.roles_at(services().clock.now()))
    return {
        "username": user.username, "full_name": user.full_name, "email": user.email,
        "roles": roles, "instance_quota": user.instance_quota,
    }


def _token_dict(token: ApiToken) -> dict[str, object]:
    # Never the hash; the secret value only once, at creation.
    iso = lambda d: d.isoformat() if d else None  # noqa: E731
    return {
        "id": token.id, "name": token.name, "prefix": token.prefix, "scopes": token.scopes.split(),
        "created_at": iso(token.created_at), "expires_at": iso(token.expires_at),
        "last_used_at": iso(token.last_used_at), "revoked_at": iso(token.revoked_at),
    }


@bp.get("/api/tokens")
def list_tokens():  # noqa: ANN201
    actor = current_actor()
    rows = db_session().scalars(
        select(ApiToken).where(ApiToken.user_id == actor.id).order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
    )
    return jsonify([_token_dict(t) for t in rows])


@bp.post("/api/tokens")
def create_token():  # noqa: ANN201
    actor = current_actor()
    require(actor, "api_token.create")  # before the body or the rate limit: a refusal costs nothing
    data = parse_body(NewToken)
    key = ("token", actor.id)
    limits = web.limits()
    limits.tokens.check(key, "token creations")
    limits.tokens.hit(key)
    svc = services()
    expires_at: datetime = svc.clock.now() + timedelta(days=data.expires_in_days)
    token, value = tokens.create_api_token(
        actor, db_session(), svc.clock, name=data.name, expires_at=expires_at, scopes=data.scopes,
    )
    return jsonify({**_token_dict(token), "token": value}), 201


@bp.delete("/api/tokens/<int:token_id>")
def revoke_token(token_id: int):  # noqa: ANN201
    actor = current_actor()
    token = db_session().get(ApiToken, token_id)
    if token is None or token.user_id != actor.id:
        # Each user manages their own tokens here; 404 rather than reveal others' ids.
        return jsonify({"error": "not_found", "message": "no such token"}), 404
    tokens.revoke_api_token(actor, db_session(), services().clock, token_id)
    return jsonify(_token_dict(token))
