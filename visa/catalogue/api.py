"""REST: the plans a user may pick."""

from __future__ import annotations

from flask import Blueprint

from visa.bookings import service as bookings
from visa.catalogue.capacity import capacity_by_flavour, flavour_cloud
from visa.catalogue.schemas import CapacityQuery, FlavourCapacityOut, PlanOut, PlansQuery
from visa.catalogue.serialize import plan_out
from visa.catalogue.service import offered_plans
from visa.openapi import doc, parse_query, respond
from visa.web.context import current_actor, db_session, services

bp = Blueprint("catalogue_api", __name__, url_prefix="/api")


@bp.get("/plans")
@doc("Plans (image x flavour) the caller may pick for these experiments", tags=["catalogue"],
     query=PlansQuery, response=list[PlanOut])
def plans():
    actor, q = current_actor(), parse_query(PlansQuery)
    lifetimes = services().settings.lifetimes
    groups = actor.user.group_names() if actor.user is not None else frozenset()
    return respond([plan_out(p, actor.roles, lifetimes, groups) for p in offered_plans(actor, db_session(), q.experiment)])


@bp.get("/capacity")
@doc("Whether each flavour can be had now by the caller, from its cloud's real capacity and the GPU "
     "bookings (units booked by others are not available; one's own accepted booking is)", tags=["catalogue"],
     query=CapacityQuery, response=list[FlavourCapacityOut])
def capacity():
    actor = current_actor()
    svc, s = services(), db_session()
    names = [n.strip() for n in parse_query(CapacityQuery).flavour if n.strip()]
    out = []
    for r in capacity_by_flavour(actor, s, svc, svc.settings, names or None):
        available, message, next_free, booked_until = r.room.available, r.room.message, None, None
        cloud = flavour_cloud(s, svc.settings, r.flavour)
        if cloud is not None and available is not None:
            said = bookings.availability(actor, s, svc.clock, svc.settings, svc, cloud, r.flavour,
                                         bookings.longest_life(actor, s, svc.clock, svc.settings, r.flavour))
            if said.booking is not None:
                message = said.message if available else message
                booked_until = said.booking.ends_on if available else None
            elif said.available is False:
                available, message, next_free = False, said.message, said.next_free
        out.append(FlavourCapacityOut(flavour=r.flavour.name, cloud=r.cloud, available=available, message=message,
                                      needs=r.room.needs, next_free=next_free,
                                      booked_until=booked_until))
    return respond(out)
