"""REST of identity: local login and logout (JSON), who am I, personal API tokens."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import Blueprint

from visa.auth import tokens, web
from visa.auth.login import local_login
from visa.auth.schemas import LoginForm, LogoutOut, MeOut, NewToken, NewTokenOut, TokenOut
from visa.auth.serialize import me_out, token_out
from visa.errors import Forbidden
from visa.openapi import doc, respond
from visa.policy import require
from visa.web.context import current_actor, db_session, login_session, services
from visa.web.csrf import csrf_token
from visa.web.io import parse_body

bp = Blueprint("auth_api", __name__)


@bp.post("/api/login")
@doc("Log in with a local account", tags=["auth"], body=LoginForm, response=MeOut, auth=False)
def login():
    svc = services()
    if not svc.settings.uses_local_accounts:
        raise Forbidden("local accounts are switched off: log in with the identity provider")
    form = parse_body(LoginForm)
    user = local_login(db_session(), svc, web.limits(), form.username, form.password, web.client_ip())
    login_session(user, "local")
    roles = sorted(r.value for r in user.roles_at(svc.clock.now()))
    return respond(me_out(user, roles, csrf_token()))


@bp.post("/api/logout")
@doc("Log out (ends the login session)", tags=["auth"], response=LogoutOut, auth=False)
def logout():
    from visa.auth.pages import end_session

    return respond(LogoutOut(next=end_session()))


@bp.get("/api/me")
@doc("Who am I", tags=["auth"], response=MeOut)
def me():
    actor = current_actor()
    assert actor.user is not None
    return respond(me_out(actor.user, sorted(r.value for r in actor.roles), csrf_token()))


@bp.get("/api/tokens")
@doc("The caller's personal API tokens (never their values)", tags=["auth"], response=list[TokenOut])
def list_tokens():
    return respond([token_out(t) for t in tokens.list_api_tokens(current_actor(), db_session())])


@bp.post("/api/tokens")
@doc("Create a personal API token (from a logged-in session); its value is shown once", tags=["auth"],
     body=NewToken, response=NewTokenOut, status=201)
def create_token():
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
    return respond(NewTokenOut(**token_out(token).model_dump(), token=value), 201)


@bp.delete("/api/tokens/<int:token_id>")
@doc("Revoke one of the caller's tokens", tags=["auth"], response=TokenOut)
def revoke_token(token_id: int):
    actor = current_actor()
    s = db_session()
    token = tokens.own_api_token(actor, s, token_id)
    tokens.revoke_api_token(actor, s, services().clock, token_id)
    return respond(token_out(token))
