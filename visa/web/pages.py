"""What every page shares: the login redirect, the decorators of pages and of the fragments their
scripts fetch, the template filters, and what every template is given (the user, the banners).

The pages themselves are their features' (``instances/pages.py``, ``sharing/pages.py``,
``admin/pages.py``, ``auth/pages.py``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from flask import Blueprint, redirect, request

from visa.actor import Actor
from visa.announcements import service as notifications
from visa.announcements.models import SystemNotification
from visa.policy import allowed
from visa.web.context import current_actor, db_session, services

bp = Blueprint("pages", __name__)


def login_url() -> str:
    """The login page, coming back here afterwards (a relative path only: no open redirect)."""
    path = request.full_path if request.query_string else request.path
    return "/login?next=" + quote(path, safe="/?=&")


def page(view: Callable[..., Any]) -> Callable[..., Any]:
    """Pages ask anonymous visitors to log in first."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        actor = current_actor(required=False)
        if actor is None:
            return redirect(login_url())
        return view(actor, *args, **kwargs)

    return wrapper


def fragment(view: Callable[..., Any]) -> Callable[..., Any]:
    """Parts of pages fetched by scripts: a 401 tells the script to reload into the login page."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return view(current_actor(), *args, **kwargs)

    return wrapper


@bp.app_template_filter("duration")
def duration(seconds: int | float | None) -> str:
    """Lifetime left, as people say it: '13 d 4 h', '5 h 12 min', '3 min'."""
    if seconds is None:
        return ""
    s = max(0, int(seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


@bp.app_template_filter("memory")
def memory(mb: int) -> str:
    return f"{mb / 1024:g} GB" if mb >= 1024 else f"{mb} MB"


@bp.app_context_processor
def _globals() -> dict[str, Any]:
    me = current_actor(required=False) if request else None
    may_support = me is not None and me.user is not None and allowed(me, "support.list")
    return {"me": me, "notices": _notices(me), "may_support": may_support, "site": services().settings.site}


def _notices(me: Actor | None) -> list[SystemNotification]:
    """What administrators announced and this user has not dismissed: banners and modals."""
    if me is None or me.user is None or request.path.startswith("/api/"):
        return []
    return notifications.active_for(me, db_session(), services().clock)
