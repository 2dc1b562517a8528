"""REST: a one-time token to open an instance's desktop; the way to its JupyterLab and web services."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, current_app, redirect, request
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.auth.ratelimit import SlidingWindow
from visa.db import after_commit
from visa.errors import Forbidden, NotFound, Unauthorized
from visa.gateway import service
from visa.gateway.jupyter import LOGIN_PATH
from visa.gateway.schemas import ConnectOut
from visa.instances import service as instances
from visa.instances.display import Display
from visa.instances.display import apply as apply_display
from visa.instances.models import Instance, MemberRole
from visa.openapi import doc, respond
from visa.services import Services
from visa.users.models import LoginSession
from visa.web.context import current_actor, current_login, db_session, services

log = logging.getLogger(__name__)
bp = Blueprint("gateway_api", __name__, url_prefix="/api/instances")


@bp.post("/<uid>/connect")
@doc("A one-time token (valid a few seconds) to open the desktop websocket", tags=["instances"],
     response=ConnectOut)
def connect(uid: str):
    actor = current_actor()
    s = db_session()
    svc = services()
    _count_connect(svc, actor.user.id if actor.user is not None else None)
    instance = instances.get_instance(actor, s, uid)
    seconds = svc.settings.connect_token_seconds
    # A browser's token is spent only by a websocket of the same login session, while it lasts.
    login = current_login()
    binding = login.id_hash if login is not None else ""
    token, role, view_only = service.issue_connect_token(actor, s, svc.clock, instance, seconds, binding)
    if role == MemberRole.OWNER:
        # What the owner changed since (keyboard layout, screen size) reaches the desktop now.
        after_commit(s, functools.partial(_apply_display, svc, Display.of(instance)))
    body = ConnectOut(url=f"/ws/desktop/{uid}?token={token}", expires_in=seconds, view_only=view_only,
                      role=role.value)
    # A token must not linger in a cache.
    return respond(body, headers={"Cache-Control": "no-store"})


def _count_connect(svc: Any, user_id: int | None) -> None:
    """Connect tokens per user and minute are bounded (each one is a database write and an
    audit record): RateLimited past ``gateway.connects_per_minute``."""
    window = current_app.extensions.get("visa_connect_limit")
    if window is None:
        window = current_app.extensions["visa_connect_limit"] = SlidingWindow(
            svc.settings.gateway.connects_per_minute, 60, lambda: svc.clock.now().timestamp()
        )
    window.limit = svc.settings.gateway.connects_per_minute
    key = ("connect", user_id)
    window.check(key, "connections asked for")
    window.hit(key)


def _apply_display(svc: Any, display: Display) -> None:
    try:
        apply_display(svc, display)
    except Exception as exc:  # the connection goes on; the log says why
        log.warning("display settings of %s not applied: %s", display.uid, getattr(exc, "message", exc))


# ``/jupyter/<uid>/...`` on visa's own host serves no instance content: it sends the owner,
# with a one-time token, to the instance's host on the user-content domain.
lab = Blueprint("gateway_jupyter", __name__)


@lab.get("/jupyter/<uid>", defaults={"rest": ""})
@lab.get("/jupyter/<uid>/", defaults={"rest": ""})
@lab.get("/jupyter/<uid>/<path:rest>")
def jupyter(uid: str, rest: str):
    def issue(actor: Actor, s: Session, svc: Services, instance: Instance, login: str) -> str:
        return service.issue_jupyter_token(actor, s, svc.clock, instance, svc.settings.connect_token_seconds, login)

    return _to_content_host("JupyterLab", uid, uid, f"/jupyter/{uid}/{rest}", issue)


def _to_content_host(what: str, uid: str, host: str, path: str,
                     issue: Callable[[Actor, Session, Services, Instance, str], str]):
    """The owner, logged in on this browser, to ``path`` on the content host ``host`` with a
    one-time token from ``issue``; anyone else learns nothing of the instance."""
    if (logged_in := _browser_login(what)) is None:
        return redirect("/login?" + urlencode({"next": request.full_path.rstrip("?")}), 303)
    actor, login = logged_in
    s = db_session()
    svc = services()
    instance = instances.get_instance(actor, s, uid)
    try:
        token = issue(actor, s, svc, instance, login.id_hash)
    except Forbidden as exc:  # the owner's: others learn nothing of it
        raise NotFound("no such instance") from exc
    wanted = path + (f"?{request.query_string.decode('latin-1')}" if request.query_string else "")
    return _hand_over(svc.settings.user_content_origin(host), token, wanted)


def _browser_login(what: str) -> tuple[Actor, LoginSession] | None:
    """The actor and browser login session a content host's link is bound to. None: nobody is
    logged in and a page asked (it is sent to log in); any other anonymous request is
    Unauthorized, and an API token is refused."""
    actor = current_actor(required=False)
    if actor is None:
        if "text/html" in request.headers.get("Accept", ""):
            return None
        raise Unauthorized("log in first")
    login = current_login()
    if login is None:  # an API token: what a content host serves is bound to a browser's login
        raise Unauthorized(f"open {what} from a browser session of visa")
    return actor, login


def _hand_over(origin: str, token: str, wanted: str):
    """To the content host's login path with the one-time token, leaving no trace of it behind."""
    response = redirect(f"{origin}{LOGIN_PATH}?" + urlencode({"token": token, "next": wanted}), 303)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


# ``/services/<uid>/<name>/...``: the same way to a web service the image declares, on the
# service's own user-content host (``visa.gateway.webservice``).
@lab.get("/services/<uid>/<name>", defaults={"rest": ""})
@lab.get("/services/<uid>/<name>/", defaults={"rest": ""})
@lab.get("/services/<uid>/<name>/<path:rest>")
def web_service(uid: str, name: str, rest: str):
    def issue(actor: Actor, s: Session, svc: Services, instance: Instance, login: str) -> str:
        return service.issue_web_service_token(actor, s, svc.clock, instance, name, svc.settings.connect_token_seconds,
                                               login)  # fmt: skip

    return _to_content_host("the web service", uid, service.web_service_host(uid, name), f"/{rest}", issue)
