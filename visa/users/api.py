"""REST: finding users (username and full name only), for sharing."""

from __future__ import annotations

from flask import Blueprint

from visa.auth import web
from visa.openapi import doc, parse_query, respond
from visa.users.schemas import UserBrief, UserSearchQuery
from visa.users.search import search_users
from visa.web.context import current_actor, db_session

bp = Blueprint("users_api", __name__, url_prefix="/api/users")


@bp.get("/search")
@doc("Find users to share with (username and full name only)", tags=["sharing"],
     query=UserSearchQuery, response=list[UserBrief])
def search():
    actor = current_actor()
    key = ("search", actor.id)
    web.limits().search.check(key, "searches")
    web.limits().search.hit(key)
    users = search_users(actor, db_session(), parse_query(UserSearchQuery).q)
    return respond([UserBrief(username=u.username, full_name=u.full_name) for u in users])
