"""The pages people use: their machines, the create wizard, progress, desktop and JupyterLab.

Views are thin: they read through the services and hand plain dicts to the templates;
changes go through the REST API from the page scripts (one path for rules and CSRF).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Flask, abort, redirect, render_template, request

from visa.actor import Actor
from visa.announcements import service as notifications
from visa.announcements.models import SystemNotification
from visa.catalogue.models import Protocol
from visa.experiments.service import experiments_of
from visa.instances import invitations, presence, progress, service, support, thumbnails
from visa.instances.models import CommandAction, Instance, InstanceState
from visa.instances.schemas import SupportQuery
from visa.instances.serialize import instance_out
from visa.policy import allowed
from visa.provisioning.names import KEYBOARD_LAYOUTS
from visa.web.context import current_actor, db_session, services
from visa.web.events import page_versions

bp = Blueprint("pages", __name__)

RUNNING = frozenset({InstanceState.ACTIVE, InstanceState.PARTIALLY_ACTIVE})
SCREEN_SIZES = [(1280, 800), (1440, 900), (1600, 900), (1680, 1050), (1920, 1080), (1920, 1200), (2560, 1440)]
# An upload goes in requests of this size, each with its offset: a broken one resumes there.
UPLOAD_CHUNK_BYTES = 8 * 1024 * 1024
STATE_LABELS = {s: s.value.replace("_", " ").capitalize() for s in InstanceState}


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


def _view(actor: Actor, instance: Instance, thumbs: dict[int, datetime] | None = None) -> dict[str, Any]:
    """An instance as the templates need it: the API dict plus what this actor may do."""
    clock = services().clock
    d = instance_out(instance, actor, clock).model_dump(mode="json")
    protocols = set(d["protocols"])
    running = instance.state in RUNNING
    thumb_at = (thumbs or {}).get(instance.id)
    may_connect = allowed(actor, "instance.connect", instance)
    d.update(
        members_may_act=instance.members_may_act,
        waiting_for_owner=not may_connect and presence.waiting_for_owner(actor, instance, clock.now()),
        state_label=STATE_LABELS[instance.state],
        running=running,
        thumbnail_url=(f"/api/instances/{instance.uid}/thumbnail?v={int(thumb_at.timestamp())}" if thumb_at else None),
        can={
            "control": allowed(actor, "instance.control", instance),
            "delete": allowed(actor, "instance.delete", instance),
            "share": allowed(actor, "instance.share", instance),
            "invite": allowed(actor, "instance.invite", instance),
            "extend": allowed(actor, "instance.extend", instance),
            "desktop": running and Protocol.VNC.value in protocols and may_connect,
            "jupyter": running and Protocol.JUPYTER.value in protocols and allowed(actor, "instance.jupyter", instance),
            "input": allowed(actor, "instance.input", instance),
            "edit": allowed(actor, "instance.edit", instance),
            "files": allowed(actor, "instance.files.read", instance),
            "upload": allowed(actor, "instance.files.write", instance),
            "start": instance.state in service.ALLOWED_FROM[CommandAction.START],
            "stop": instance.state in service.ALLOWED_FROM[CommandAction.STOP],
            "reboot": instance.state in service.ALLOWED_FROM[CommandAction.REBOOT],
        },
    )
    return d


def _home_items(actor: Actor) -> list[dict[str, Any]]:
    s = db_session()
    items = service.list_instances(actor, s)
    thumbs = thumbnails.thumbnail_times(s, [i.id for i in items])
    return [_view(actor, i, thumbs) for i in items]


def _live_versions(actor: Actor) -> dict[str, str]:
    assert actor.user is not None
    return page_versions(db_session(), actor.user.id)


def _quota(actor: Actor) -> dict[str, int]:
    assert actor.user is not None
    return {"used": service.active_instance_count(db_session(), actor.user), "quota": actor.user.instance_quota}


@bp.get("/")
@page
def home(actor: Actor):
    return render_template("home.html", instances=_home_items(actor), quota=_quota(actor),
                           live_versions=_live_versions(actor))


@bp.get("/instances/_cards")
@fragment
def home_cards(actor: Actor):
    return render_template("_cards.html", instances=_home_items(actor))


@bp.get("/instances/new")
@page
def create(actor: Actor):
    experiments = [
        {
            "id": e.id, "external_id": e.external_id, "title": e.title or e.proposal.title,
            "proposal": e.proposal.identifier, "instrument": e.instrument.name,
            "year": e.start_date.year, "start": e.start_date.isoformat(), "end": e.end_date.isoformat(),
        }
        for e in experiments_of(actor, db_session())
    ]
    return render_template(
        "create.html",
        experiments=experiments,
        instruments=sorted({e["instrument"] for e in experiments}),
        years=sorted({e["year"] for e in experiments}, reverse=True),
        may_skip_experiment=allowed(actor, "create_instance_without_experiment"),
        keyboard_layouts=KEYBOARD_LAYOUTS,
        screen_sizes=SCREEN_SIZES,
        quota=_quota(actor),
    )


def _instance_page_data(actor: Actor, uid: str) -> tuple[Instance, dict[str, Any]]:
    s = db_session()
    instance = service.get_instance(actor, s, uid)
    thumbs = thumbnails.thumbnail_times(s, [instance.id])
    data = _view(actor, instance, thumbs)
    data.update(progress.progress_of(s, instance))
    return instance, data


@bp.get("/instances/<uid>")
@page
def instance(actor: Actor, uid: str):
    inst, data = _instance_page_data(actor, uid)
    members = sorted(
        ({"username": m.user.username, "full_name": m.user.full_name, "role": m.role.value} for m in inst.members),
        key=lambda m: (m["role"] != "OWNER", m["username"]),
    )
    s, clock = db_session(), services().clock
    helped = presence.support_sessions(actor, s, inst) if allowed(actor, "instance.support.history", inst) else []
    return render_template("instance.html", i=data, members=members, keyboard_layouts=KEYBOARD_LAYOUTS,
                           screen_sizes=SCREEN_SIZES, upload_chunk=UPLOAD_CHUNK_BYTES,
                           max_upload=services().settings.transfers.max_upload_bytes,
                           presence=presence.presence_of(actor, s, clock, inst).model_dump(mode="json"),
                           helped=[h.model_dump(mode="json") for h in helped], live_versions=_live_versions(actor))


@bp.get("/support")
@page
def support_page(actor: Actor):
    """Support staff: the instances they may help with, filtered; asking to join is the page's script."""
    q = SupportQuery(q=request.args.get("q", "")[:100], instrument=request.args.get("instrument", "")[:64],
                     state=request.args.get("state", "")[:32])
    s = db_session()
    rows = support.support_instances(actor, s, services().clock, q)
    return render_template("support.html", rows=[r.model_dump(mode="json") for r in rows], query=q,
                           instruments=support.support_instruments(actor, s), states=list(STATE_LABELS.items()))


@bp.get("/invite/<token>")
@page
def invitation(actor: Actor, token: str):
    """An invitation link, after logging in: what it gives, and a button to join (spent only then)."""
    inst, role = invitations.peek_invitation(actor, db_session(), services().clock, token)
    return render_template("invite.html", token=token, name=inst.name, role=role.value,
                           owner=inst.owner.full_name or inst.owner.username)


@bp.get("/instances/<uid>/_status")
@fragment
def instance_status(actor: Actor, uid: str):
    _, data = _instance_page_data(actor, uid)
    return render_template("_status.html", i=data)


@bp.get("/instances/<uid>/desktop")
@page
def desktop(actor: Actor, uid: str):
    inst = service.get_instance(actor, db_session(), uid)
    # A member kept out only until the owner connects gets the page: it waits, then opens by itself.
    if not allowed(actor, "instance.connect", inst) and not presence.waiting_for_owner(actor, inst, services().clock.now()):
        abort(403)
    clip = services().settings.clipboard
    return render_template("desktop.html", i=_view(actor, inst), url_hosts=clip.url_hosts, url_max=clip.max_url_chars)


@bp.get("/instances/<uid>/jupyter")
@page
def jupyter(actor: Actor, uid: str):
    inst = service.get_instance(actor, db_session(), uid)
    if not allowed(actor, "instance.jupyter", inst):
        abort(403, "JupyterLab is open to the owner only")
    # The lab runs on an origin of its own, in its own tab: never framed in visa's pages.
    return redirect(f"/jupyter/{inst.uid}/lab", 303)


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
    return {"me": me, "notices": _notices(me), "may_support": may_support}


def _notices(me: Actor | None) -> list[SystemNotification]:
    """What administrators announced and this user has not dismissed: banners and modals."""
    if me is None or me.user is None or request.path.startswith("/api/"):
        return []
    return notifications.active_for(me, db_session(), services().clock)


def register(app: Flask) -> None:
    """The pages and the small REST parts only they use (thumbnails)."""
    from visa.instances.thumbnails_api import bp as thumbnails_api

    app.register_blueprint(bp)
    app.register_blueprint(thumbnails_api)
