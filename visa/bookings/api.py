"""REST: GPU bookings (users ask and cancel; administrators and instrument scientists decide)."""

from __future__ import annotations

from flask import Blueprint

from visa.actor import Actor
from visa.bookings import service
from visa.bookings.schemas import BookingOut, BookingQuery, DecideBooking, RequestBooking
from visa.bookings.serialize import booking_out
from visa.errors import InvalidInput
from visa.openapi import doc, parse_query, respond
from visa.web.context import current_actor, db_session, services
from visa.web.io import parse_body

bp = Blueprint("bookings_api", __name__, url_prefix="/api")


def _actor() -> Actor:
    actor = current_actor()
    assert actor is not None  # current_actor() raises Unauthorized first
    return actor


@bp.post("/bookings")
@doc("Ask for GPU machines on days of one's beamtime (refused at once, naming the day, when it is full)",
     tags=["bookings"], body=RequestBooking, response=BookingOut, status=201)
def request_booking():
    actor, svc = _actor(), services()
    booking = service.request_booking(actor, db_session(), svc.clock, svc.settings, svc, parse_body(RequestBooking))
    return respond(booking_out(booking), 201)


@bp.get("/bookings")
@doc("One's own bookings, or (scope=decide) those one decides on", tags=["bookings"], query=BookingQuery,
     response=list[BookingOut])
def list_bookings():
    actor, s = _actor(), db_session()
    scope = parse_query(BookingQuery).scope
    if scope not in ("mine", "decide"):
        raise InvalidInput("scope must be mine or decide", field="scope")
    found = service.my_bookings(actor, s) if scope == "mine" else service.bookings_to_decide(actor, s)
    return respond([booking_out(b) for b in found])


@bp.get("/bookings/<int:booking_id>")
@doc("One booking", tags=["bookings"], response=BookingOut)
def get_booking(booking_id: int):
    return respond(booking_out(service.get_booking(_actor(), db_session(), booking_id)))


@bp.post("/bookings/<int:booking_id>/<any(accept, refuse):decision>")
@doc("Accept (the calendar checked again) or refuse (with a reason) a booking", tags=["bookings"],
     body=DecideBooking, response=BookingOut)
def decide_booking(booking_id: int, decision: str):
    actor, s, svc = _actor(), db_session(), services()
    data = parse_body(DecideBooking)
    if decision == "accept":
        booking = service.accept_booking(actor, s, svc.clock, svc.settings, svc, booking_id, data)
    else:
        booking = service.refuse_booking(actor, s, svc.clock, svc.settings, booking_id, data)
    return respond(booking_out(booking))


@bp.post("/bookings/<int:booking_id>/cancel")
@doc("Give a booking's units back (its machines keep their end)", tags=["bookings"], response=BookingOut)
def cancel_booking(booking_id: int):
    actor, svc = _actor(), services()
    return respond(booking_out(service.cancel_booking(actor, db_session(), svc.clock, svc.settings, booking_id)))
