"""REST: the user's instances and their actions."""

from __future__ import annotations

from flask import Blueprint

from visa.bookings import service as bookings
from visa.instances import listing, service
from visa.instances.models import CommandAction
from visa.instances.schemas import CreateInstance, EditInstance, InstanceOut, MemberAccessIn, MemberAccessOut
from visa.instances.serialize import instance_out, member_access, row_out
from visa.openapi import doc, respond
from visa.web.context import current_actor, db_session, services
from visa.web.io import parse_body

bp = Blueprint("instances_api", __name__, url_prefix="/api/instances")


@bp.get("")
@doc("The caller's instances and those shared with them", tags=["instances"], response=list[InstanceOut])
def list_instances():
    clock = services().clock
    return respond([row_out(i, clock) for i in listing.home_rows(current_actor(), db_session())])


@bp.post("")
@doc("Ask for a new instance (returns at once, in BUILDING); a GPU size comes from the caller's accepted "
     "booking for today when they have one, and ends with it", tags=["instances"],
     body=CreateInstance, response=InstanceOut, status=201)
def create_instance():
    actor = current_actor()
    data = parse_body(CreateInstance)
    svc = services()
    instance = bookings.create_instance(actor, db_session(), svc.clock, svc.settings, svc, data)
    return respond(instance_out(instance, actor, svc.clock), 201)


@bp.get("/<uid>")
@doc("One instance", tags=["instances"], response=InstanceOut)
def get_instance(uid: str):
    actor = current_actor()
    return respond(instance_out(service.get_instance(actor, db_session(), uid), actor, services().clock))


@bp.patch("/<uid>")
@doc("Change the name, comments, keyboard layout or screen size (the owner; the desktop gets the "
     "last two at the next connection)", tags=["instances"], body=EditInstance, response=InstanceOut)
def edit_instance(uid: str):
    actor = current_actor()
    s = db_session()
    instance = service.get_instance(actor, s, uid)
    data = parse_body(EditInstance)
    service.edit_instance(actor, s, services().clock, instance, data)
    return respond(instance_out(instance, actor, services().clock))


@bp.put("/<uid>/member-access")
@doc("Whether members may use the desktop while the owner is away: as the image says, never "
     "(only while the owner is connected) or always (the owner's choice; audited)", tags=["instances"],
     body=MemberAccessIn, response=MemberAccessOut)
def set_member_access(uid: str):
    actor, s = current_actor(), db_session()
    instance = service.get_instance(actor, s, uid)
    data = parse_body(MemberAccessIn)
    service.set_member_access(actor, s, services().clock, instance, data.mode)
    return respond(member_access(instance))


@bp.post("/<uid>/<any(start, stop, reboot):action>")
@doc("Start, stop or reboot an instance", tags=["instances"], response=InstanceOut, status=202)
def act(uid: str, action: str):
    actor = current_actor()
    s = db_session()
    instance = service.get_instance(actor, s, uid)
    service.request_action(actor, s, services().clock, instance, CommandAction(action.upper()))
    return respond(instance_out(instance, actor, services().clock), 202)


@bp.delete("/<uid>")
@doc("Delete an instance (shut down first, then deleted)", tags=["instances"], response=InstanceOut, status=202)
def delete(uid: str):
    actor = current_actor()
    s = db_session()
    instance = service.get_instance(actor, s, uid)
    service.request_action(actor, s, services().clock, instance, CommandAction.DELETE)
    return respond(instance_out(instance, actor, services().clock), 202)
