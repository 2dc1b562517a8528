"""The pages people use for their machines: the list, the create wizard, a machine's page with
its progress, members and files, the desktop and JupyterLab.

Views are thin: they read through the services and hand plain dicts to the templates;
changes go through the REST API from the page scripts (one path for rules and CSRF).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, abort, redirect, render_template

from visa.actor import Actor
from visa.bookings import service as bookings
from visa.catalogue.models import Protocol
from visa.commands import progress
from visa.experiments.service import experiments_of
from visa.instances import listing, service, thumbnails
from visa.instances.listing import RowTarget
from visa.instances.models import CommandAction, Instance, InstanceState
from visa.instances.serialize import instance_out, row_out
from visa.policy import allowed
from visa.provisioning.names import KEYBOARD_LAYOUTS
from visa.sharing import presence
from visa.web.context import db_session, services
from visa.web.events import page_versions
from visa.web.pages import fragment, page

bp = Blueprint("instance_pages", __name__)

RUNNING = frozenset({InstanceState.ACTIVE, InstanceState.PARTIALLY_ACTIVE})
SCREEN_SIZES = [(1280, 800), (1440, 900), (1600, 900), (1680, 1050), (1920, 1080), (1920, 1200), (2560, 1440)]
# An upload goes in requests of this size, each with its offset: a broken one resumes there.
UPLOAD_CHUNK_BYTES = 8 * 1024 * 1024
STATE_LABELS = {s: s.value.replace("_", " ").capitalize() for s in InstanceState}


def _view(actor: Actor, instance: Instance, thumbs: dict[int, datetime] | None = None) -> dict[str, Any]:
    """An instance as the templates need it: the API dict plus what this actor may do."""
    out = instance_out(instance, actor, services().clock).model_dump(mode="json")
    card = _card(actor, out, instance, instance.state, (thumbs or {}).get(instance.id))
    # The web services its image declares, each on a host of its own (the owner's, like JupyterLab).
    card["web_services"] = (
        [str(w["name"]) for w in instance.plan.image.web_services or []]
        if card["running"] and allowed(actor, "instance.web_service", instance) else []
    )
    return card


def _card(actor: Actor, d: dict[str, Any], target: Instance | RowTarget, state: InstanceState,
          thumb_at: datetime | None) -> dict[str, Any]:
    """The API dict ``d`` of an instance, with what the policy lets this actor do with ``target``
    (the instance's model, or its list row: the same rules answer both)."""
    protocols = set(d["protocols"])
    running = state in RUNNING
    may_connect = allowed(actor, "instance.connect", target)
    d.update(
        members_may_act=target.members_may_act,
        waiting_for_owner=not may_connect and presence.waiting_for_owner(actor, target, services().clock.now()),
        state_label=STATE_LABELS[state],
        running=running,
        thumbnail_url=(f"/api/instances/{d['uid']}/thumbnail?v={int(thumb_at.timestamp())}" if thumb_at else None),
        can={
            "control": allowed(actor, "instance.control", target),
            "delete": allowed(actor, "instance.delete", target),
            "share": allowed(actor, "instance.share", target),
            "invite": allowed(actor, "instance.invite", target),
            "extend": allowed(actor, "instance.extend", target),
            "desktop": running and bool({Protocol.VNC.value, Protocol.RDP.value} & protocols) and may_connect,
            "jupyter": running and Protocol.JUPYTER.value in protocols and allowed(actor, "instance.jupyter", target),
            "input": allowed(actor, "instance.input", target),
            "edit": allowed(actor, "instance.edit", target),
            "files": allowed(actor, "instance.files.read", target),
            "upload": allowed(actor, "instance.files.write", target),
            "start": state in service.ALLOWED_FROM[CommandAction.START],
            "stop": state in service.ALLOWED_FROM[CommandAction.STOP],
            "reboot": state in service.ALLOWED_FROM[CommandAction.REBOOT],
        },
    )
    return d


def _home_items(actor: Actor) -> list[dict[str, Any]]:
    """The home list read as rows, as ``GET /api/instances`` reads it, with the policy asked of them."""
    s, clock = db_session(), services().clock
    items = listing.home_rows(actor, s)
    thumbs = thumbnails.thumbnail_times(s, [i.row.id for i in items])
    targets = listing.policy_targets(actor, s, items, clock.now())
    return [_card(actor, row_out(i, clock).model_dump(mode="json"), t, i.row.state, thumbs.get(i.row.id))
            for i, t in zip(items, targets, strict=True)]


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
            "doi": e.doi, "doi_url": e.doi_url, "data_url": e.data_url, "logbook_url": e.logbook_url,
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
    booking = bookings.made_from(actor, s, instance)
    # The GPU booking it was made from, whose end is its own at the latest.
    data["booking"] = None if booking is None else {
        "id": booking.id, "starts_on": booking.starts_on.isoformat(), "ends_on": booking.ends_on.isoformat(),
        "ends_at": bookings.booking_end(booking).isoformat(), "mine": booking.user_id == actor.id}
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
    access = None
    if allowed(actor, "instance.member_access", inst):
        access = {"mode": service.member_access_mode(inst), "image_needs_owner": inst.plan.image.members_need_owner}
    return render_template("instance.html", i=data, members=members, keyboard_layouts=KEYBOARD_LAYOUTS,
                           member_access=access, view_links=allowed(actor, "instance.view_link", inst),
                           screen_sizes=SCREEN_SIZES, upload_chunk=UPLOAD_CHUNK_BYTES,
                           max_upload=services().settings.transfers.max_upload_bytes,
                           presence=presence.presence_of(actor, s, clock, inst).model_dump(mode="json"),
                           helped=[h.model_dump(mode="json") for h in helped], live_versions=_live_versions(actor),
                           data_links=_data_links(inst))


def _data_links(inst: Instance) -> list[dict[str, Any]]:
    """What the machine mounts, with each experiment's DOI (to cite) and pages; open data's
    logbooks belong to other teams and are not shown."""
    return [
        {"external_id": e.external_id, "proposal": e.proposal.identifier, "instrument": e.instrument.name,
         "doi": e.doi, "doi_url": e.doi_url, "data_url": e.data_url,
         "logbook_url": None if open_data else e.logbook_url, "open_data": open_data}
        for open_data, group in ((False, inst.experiments), (True, inst.open_data_experiments))
        for e in group
    ]


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
