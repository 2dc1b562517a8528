"""REST: finding users (username and full name only), for sharing."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from visa.auth import web
from visa.users.search import search_users
from visa.web.context import current_actor, db_session

bp = Blueprint("users_api", __name__, url_prefix="/api/users")


@bp.get("/search")
def search():  # noqa: ANN201
    actor = current_actor()
    key = ("search", actor.id)
    web.limits().search.check(key, "searches")
    web.limits().search.hit(key)
    users = search_users(actor, db_session(), request.args.get("q", ""))
    # Only what sharing needs: no email, no ids, no roles.
    return jsonify([{"username": u.username, "full_name": u.full_name} for u in users])
