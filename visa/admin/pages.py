"""Admin pages: dashboard, instances, catalogue, users, groups, instruments, notifications, audit.

Views read through each feature's service functions and hand the documented models (as dicts) to the
templates; every change goes through ``/api/admin`` from the page script, so the rules and
the CSRF check are those of the API.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request
from jinja2 import TemplateNotFound
from pydantic import ValidationError

from visa.actor import Actor
from visa.admin import schemas as S
from visa.admin import serialize
from visa.announcements import service as notifications
from visa.announcements.serialize import notification_out
from visa.audit import service as audit_service
from visa.audit.serialize import audit_out
from visa.catalogue import service as catalogue_service
from visa.clouds import service as clouds_service
from visa.errors import InvalidInput
from visa.experiments import service as experiments
from visa.instances import attributes, listing
from visa.instances import extensions as extension_service
from visa.instances import service as instance_service
from visa.instances.models import InstanceState
from visa.openapi import parse_query
from visa.paging import Total
from visa.policy import require
from visa.usage import service as usage_service
from visa.usage.schemas import DIMENSIONS, UsageReportQuery
from visa.users import groups as user_groups
from visa.users.models import Role
from visa.web.context import current_actor, db_session, services

bp = Blueprint("admin_pages", __name__, url_prefix="/admin")

SECTIONS = [
    ("admin_pages.dashboard", "Dashboard"), ("admin_pages.instances", "Instances"),
    ("admin_pages.extensions", "Extensions"), ("admin_pages.gpus", "GPU pools"),
    ("admin_pages.usage_report", "Usage report"),
    ("admin_pages.catalogue", "Catalogue"), ("admin_pages.users", "Users"),
    ("admin_pages.groups", "Groups"), ("admin_pages.instruments", "Instruments"),
    ("admin_pages.notifications", "Notifications"), ("admin_pages.audit", "Audit log"),
]


def admin_page(action: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Anonymous visitors log in first; others need the policy's ``action`` (403 otherwise)."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            actor = current_actor(required=False)
            if actor is None:
                from visa.web.pages import login_url

                return redirect(login_url())
            require(actor, action)
            return view(actor, *args, **kwargs)

        return wrapper

    return decorate


def _base_template() -> str:
    """The site's base.html when it offers a ``content`` block, else a standalone one."""
    env = current_app.jinja_env
    try:
        if "content" in env.get_template("base.html").blocks:
            return "base.html"
    except TemplateNotFound:
        pass
    return "admin/_standalone.html"


def _render(template: str, **context: Any) -> str:
    return render_template(template, admin_base=_base_template(), sections=SECTIONS, **context)


def _pages(total: int | Total, q: S.PageQuery, shown: int | None = None) -> dict[str, Any]:
    """The pager; ``shown``: the rows on this page (a count that stopped short needs it)."""
    if not isinstance(total, Total):
        total = Total(total)
    last = total.last_page(q.per_page, q.page, full=shown == q.per_page)
    args = request.args.to_dict(flat=False)

    def url(page: int) -> str:
        from urllib.parse import urlencode

        return "?" + urlencode({**args, "page": [str(page)]}, doseq=True)

    more = last is None or q.page < last
    return {"page": q.page, "last": last, "total": total.count, "exact": total.exact,
            "prev": url(q.page - 1) if q.page > 1 else None, "next": url(q.page + 1) if more else None}


@bp.get("/")
@admin_page("view_all_instances")
def dashboard(actor: Actor):
    svc = services()
    stats = serialize.stats(actor, db_session(), svc.clock, svc).model_dump(mode="json")
    return _render("admin/dashboard.html", title="Dashboard", stats=stats)


@bp.get("/usage")
@admin_page("view_usage")
def usage_report(actor: Actor):
    """The usage report of a period, as a table with its chart and CSV; a bad filter is named on the page."""
    error, report, status = None, None, 200
    try:
        q = parse_query(UsageReportQuery)
        report = usage_service.usage_report(actor, db_session(), services().clock, q)
    except ValidationError as exc:
        first = exc.errors()[0]
        error, status = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}", 400
    except InvalidInput as exc:
        error, status = exc.message, 400
    args = {k: v for k, v in request.args.items() if v != ""}
    return _render("admin/usage.html", title="Usage report", report=report, error=error, args=args,
                   dimensions=DIMENSIONS), status


@bp.get("/instances")
@admin_page("view_all_instances")
def instances(actor: Actor):
    q = parse_query(S.InstanceQuery)
    s, clock = db_session(), services().clock
    items, total = listing.search_rows(actor, s, q)  # read as rows, as the API reads them
    rows = [serialize.admin_row(i, clock).model_dump(mode="json") for i in items]
    return _render("admin/instances.html", title="Instances", rows=rows, q=q, pages=_pages(total, q, len(rows)),
                   states=[st.value for st in InstanceState], sorts=S.INSTANCE_SORTS,
                   definitions=attributes.list_definitions(actor, s))


@bp.get("/instances/<uid>")
@admin_page("view_all_instances")
def instance(actor: Actor, uid: str):
    s, clock = db_session(), services().clock
    inst = instance_service.get_any_instance(actor, s, uid)
    detail = serialize.instance_detail(
        inst, actor, clock, instance_service.instance_commands(actor, s, inst), audit_service.instance_history(actor, s, inst.uid)
    ).model_dump(mode="json")
    try:
        user_data, user_data_error = instance_service.render_userdata(actor, s, clock, services().settings, uid,
                                                                      audit=False), None
    except Exception as exc:  # a preview that cannot render says why, the page still shows
        user_data, user_data_error = None, str(getattr(exc, "message", exc))[:300]
    from visa.instances.models import CommandAction
    from visa.instances.service import ALLOWED_FROM

    can = {a.value.lower(): inst.state in ALLOWED_FROM[a] for a in ALLOWED_FROM}
    can["delete"] = inst.deleted_at is None and inst.state != InstanceState.DELETING
    return _render("admin/instance.html", title=f"Instance {inst.name}", i=detail, user_data=user_data,
                   definitions=attributes.list_definitions(actor, s),
                   user_data_error=user_data_error, can=can, deleted=inst.deleted_at is not None,
                   actions=[a.value.lower() for a in (CommandAction.REBOOT, CommandAction.STOP, CommandAction.START)])


@bp.get("/extensions")
@admin_page("handle_extensions")
def extensions(actor: Actor):
    hours = services().settings.lifetimes.untouched_tab_hours
    rows = [serialize.pending_extension(r, i, hours).model_dump(mode="json")
            for r, i in extension_service.pending_with_context(actor, db_session())]
    return _render("admin/extensions.html", title="Extension requests", rows=rows)


@bp.get("/gpus")
@admin_page("view_gpu_pools")
def gpus(actor: Actor):
    clouds = [c.model_dump(mode="json") for c in serialize.gpu_pools(actor, db_session(), services())]
    return _render("admin/gpus.html", title="GPU pools", clouds=clouds)


@bp.get("/catalogue")
@admin_page("manage_catalogue")
def catalogue(actor: Actor):
    s = db_session()
    flavours = [f.model_dump(mode="json") for f in serialize.flavours(actor, s)]
    clouds = clouds_service.cloud_names(s)
    images = [serialize.image(i, clouds).model_dump(mode="json") for i in catalogue_service.list_images(actor, s)]
    plans = [serialize.plan(p).model_dump(mode="json") for p in catalogue_service.list_plans(actor, s)]
    return _render("admin/catalogue.html", title="Catalogue", flavours=flavours, images=images, plans=plans,
                   roles=[r.value for r in Role], cloud_names=sorted(clouds.values()))


@bp.get("/users")
@admin_page("manage_users")
def users(actor: Actor):
    q = parse_query(S.UserQuery)
    found, total = serialize.users_page(actor, db_session(), services().clock, q)
    rows = [u.model_dump(mode="json") for u in found]
    return _render("admin/users.html", title="Users", rows=rows, q=q, pages=_pages(total, q),
                   roles=[r.value for r in Role])


@bp.get("/groups")
@admin_page("manage_groups")
def groups(actor: Actor):
    rows = [{"name": g.name, "description": g.description,
             "members": [{"username": u, "source": src.value} for u, src in members]}
            for g, members in user_groups.list_groups(actor, db_session())]
    return _render("admin/groups.html", title="Groups", rows=rows)


@bp.get("/instruments")
@admin_page("manage_instruments")
def instruments(actor: Actor):
    rows = [{"name": i.name, "scientists": sorted((u.username, u.full_name) for u in i.scientists)}
            for i in experiments.list_instruments(actor, db_session())]
    return _render("admin/instruments.html", title="Instruments", rows=rows)


@bp.get("/notifications", endpoint="notifications")
@admin_page("manage_notifications")
def notifications_page(actor: Actor):
    rows = [notification_out(n, c).model_dump(mode="json") for n, c in notifications.list_all(actor, db_session())]
    return _render("admin/notifications.html", title="Notifications", rows=rows)


@bp.get("/audit")
@admin_page("view_audit")
def audit(actor: Actor):
    q = parse_query(S.AuditQuery)
    items, total = audit_service.audit_events(actor, db_session(), q)
    rows = [audit_out(e).model_dump(mode="json") for e in items]
    return _render("admin/audit.html", title="Audit log", rows=rows, q=q, pages=_pages(total, q))

