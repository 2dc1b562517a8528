"""The pages of sharing: the support desk's list of the machines its staff may help with, an
invitation link opened after logging in, and a public view link's desktop (no login)."""

from __future__ import annotations

from flask import Blueprint, make_response, render_template, request

from visa.actor import Actor
from visa.errors import Unauthorized
from visa.instances.pages import STATE_LABELS
from visa.sharing import invitations, support, viewlinks
from visa.sharing.schemas import SupportQuery
from visa.web.context import db_session, services
from visa.web.pages import page

bp = Blueprint("sharing_pages", __name__)


@bp.get("/support")
@page
def support_page(actor: Actor):
    """Support staff: the instances they may help with, filtered; asking to join is the page's script."""
    q = SupportQuery.model_validate({"q": request.args.get("q", "")[:100],
                                     "instrument": request.args.get("instrument", "")[:64],
                                     "state": request.args.get("state", "")[:32]})
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


@bp.get("/view/<token>")
def view_link(token: str):
    """A public view link: the desktop, view only, for whoever holds it. No login, and no cookie
    is set; the page shows the owner's label, not the instance, and opens the gateway's ``/ws/view``
    with the link, and nothing else."""
    try:
        viewing = viewlinks.open_view_link(db_session(), services().clock, token)
        response = make_response(render_template("view.html", label=viewing.label,
                                                 expires_at=viewing.expires_at.isoformat()))
    except Unauthorized as exc:
        response = make_response(render_template("view.html", refused=exc.message), 404)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
