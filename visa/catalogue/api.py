"""REST: the plans a user may pick."""

from __future__ import annotations

from flask import Blueprint, request

from visa.catalogue.capacity import capacity_by_flavour
from visa.catalogue.schemas import CapacityQuery, FlavourCapacityOut, PlanOut, PlansQuery
from visa.catalogue.serialize import plan_out
from visa.catalogue.service import offered_plans
from visa.errors import InvalidInput
from visa.openapi import doc, respond
from visa.web.context import current_actor, db_session, services

bp = Blueprint("catalogue_api", __name__, url_prefix="/api")


@bp.get("/plans")
@doc("Plans (image x flavour) the caller may pick for these experiments", tags=["catalogue"],
     query=PlansQuery, response=list[PlanOut])
def plans():
    actor = current_actor()
    try:
        ids = [int(x) for x in request.args.getlist("experiment")]
    except ValueError:
        raise InvalidInput("experiment must be a number", field="experiment") from None
    lifetimes = services().settings.lifetimes
    return respond([plan_out(p, actor.roles, lifetimes) for p in offered_plans(actor, db_session(), ids)])


@bp.get("/capacity")
@doc("Whether each flavour can be had now, from its cloud's real capacity", tags=["catalogue"],
     query=CapacityQuery, response=list[FlavourCapacityOut])
def capacity():
    actor = current_actor()
    svc = services()
    names = [n.strip() for n in request.args.getlist("flavour") if n.strip()]
    rooms = capacity_by_flavour(actor, db_session(), svc, svc.settings, names or None)
    return respond([
        FlavourCapacityOut(flavour=r.flavour.name, cloud=r.cloud, available=r.room.available,
                           message=r.room.message, needs=r.room.needs)
        for r in rooms
    ])
