"""REST: an instance's members and support access (``/api/instances/<uid>/members``, ``/support``)."""

from __future__ import annotations

from flask import Blueprint

from visa.instances import service, sharing
from visa.instances.schemas import MemberOut, NewMember, PendingSupportOut, RoleChange, SupportOut
from visa.instances.serialize import member_out
from visa.openapi import doc, respond
from visa.web.context import current_actor, db_session, services
from visa.web.io import parse_body

bp = Blueprint("members_api", __name__, url_prefix="/api/instances/<uid>")


def _instance(uid: str):  # noqa: ANN202
    actor = current_actor()
    return actor, service.get_instance(actor, db_session(), uid)


@bp.get("/members")
@doc("An instance's members", tags=["sharing"], response=list[MemberOut])
def list_members(uid: str):  # noqa: ANN201
    actor, instance = _instance(uid)
    return respond([member_out(m) for m in sharing.list_members(actor, db_session(), instance)])


@bp.post("/members")
@doc("Share an instance with a user", tags=["sharing"], body=NewMember, response=MemberOut, status=201)
def add_member(uid: str):  # noqa: ANN201
    actor, instance = _instance(uid)
    data = parse_body(NewMember)
    member = sharing.add_member(actor, db_session(), services().clock, instance, data.username, data.role)
    return respond(member_out(member), 201)


@bp.put("/members/<username>")
@bp.patch("/members/<username>")
@doc("Change a member's role", tags=["sharing"], body=RoleChange, response=MemberOut)
def change_role(uid: str, username: str):  # noqa: ANN201
    actor, instance = _instance(uid)
    data = parse_body(RoleChange)
    member = sharing.change_role(actor, db_session(), services().clock, instance, username, data.role)
    return respond(member_out(member))


@bp.delete("/members/<username>")
@doc("Remove a member", tags=["sharing"], status=204)
def revoke_member(uid: str, username: str):  # noqa: ANN201
    actor, instance = _instance(uid)
    sharing.revoke_member(actor, db_session(), services().clock, instance, username)
    return "", 204


@bp.post("/support")
@doc("Support staff ask to join an instance (joined at once, or pending the owner's approval)", tags=["sharing"],
     response=SupportOut, status=202, extra_responses={201: "Joined at once"})
def request_support(uid: str):  # noqa: ANN201
    actor, instance = _instance(uid)
    member = sharing.request_support_access(actor, db_session(), services().clock, instance)
    if member is None:
        return respond(SupportOut(status="pending", message="the owner has been asked to approve"), 202)
    return respond(SupportOut(status="joined", member=member_out(member)), 201)


@bp.get("/support")
@doc("Pending support requests (owner)", tags=["sharing"], response=list[PendingSupportOut])
def pending_support(uid: str):  # noqa: ANN201
    actor, instance = _instance(uid)
    return respond(sharing.pending_support_requests(actor, db_session(), services().clock, instance))


@bp.post("/support/<username>/<any(approve, deny):answer>")
@doc("Approve or deny a support request (owner)", tags=["sharing"], response=SupportOut)
def answer_support(uid: str, username: str, answer: str):  # noqa: ANN201
    actor, instance = _instance(uid)
    member = sharing.answer_support_request(
        actor, db_session(), services().clock, instance, username, approve=answer == "approve"
    )
    return respond(SupportOut(status="approved" if member else "denied", member=member_out(member) if member else None))
