"""The bookings page: one's own bookings and the form to ask for one; for those who decide, the
bookings of their beamtimes with the buttons to accept or refuse. Its forms call the REST API."""

from __future__ import annotations

from flask import Blueprint, render_template
from sqlalchemy import select

from visa.actor import Actor
from visa.bookings import service
from visa.bookings.serialize import booking_out
from visa.catalogue.models import Flavour
from visa.experiments.service import experiments_of
from visa.web.context import db_session, services
from visa.web.pages import page

bp = Blueprint("booking_pages", __name__)


@bp.get("/bookings")
@page
def bookings(actor: Actor):
    s, svc = db_session(), services()
    today = svc.clock.now().date()
    decide = service.bookings_to_decide(actor, s) if service.can_decide_some(actor) else []
    gpu_sizes = [f.name for f in s.scalars(
        select(Flavour).where(Flavour.visible.is_(True), Flavour.gpu_count > 0).order_by(Flavour.name))]
    return render_template(
        "bookings.html", today=today.isoformat(), sizes=gpu_sizes,
        experiments=[e for e in experiments_of(actor, s) if e.end_date >= today],
        mine=[booking_out(b).model_dump(mode="json") for b in service.my_bookings(actor, s)],
        decide=[booking_out(b).model_dump(mode="json") for b in decide], may_decide=service.can_decide_some(actor),
        margin=svc.settings.bookings.beamtime_margin_days,
    )
