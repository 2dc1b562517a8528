"""REST: an instance's members, support access, presence, invitation links and view links
(``/api/instances/<uid>/members``, ``/support``, ``/presence``, ``/invitations``, ``/view-links``), redeeming a
link (``/api/invitations/redeem``) and the support page's list (``/api/support/instances``)."""

from __future__ import annotations

from flask import Blueprint

from visa.instances import service
from visa.instances.models import InstanceMember
from visa.openapi import doc, parse_query, respond
from visa.sharing import invitations, support, viewlinks
from visa.sharing import presence as presence_service
from visa.sharing import service as sharing
from visa.sharing.schemas import (
    InvitationOut,
    MemberOut,
    NewInvitation,
    NewMember,
    NewViewLink,
    PendingSupportOut,
    PresenceEvent,
    RedeemedOut,
    RedeemInvitation,
    RoleChange,
    SupportInstanceOut,
    SupportOut,
    SupportQuery,
    SupportSessionOut,
    ViewLinkOut,
)
from visa.sharing.serialize import member_out
from visa.web.context import current_actor, db_session, services
from visa.web.io import parse_body

bp = Blueprint("members_api", __name__, url_prefix="/api/instances/<uid>")


def _instance(uid: str):
    actor = current_actor()
    return actor, service.get_instance(actor, db_session(), uid)


@bp.get("/members")
@doc("An instance's members", tags=["sharing"], response=list[MemberOut])
def list_members(uid: str):
    actor, instance = _instance(uid)
    return respond([member_out(m) for m in sharing.list_members(actor, db_session(), instance)])


@bp.post("/members")
@doc("Share an instance with a user", tags=["sharing"], body=NewMember, response=MemberOut, status=201)
def add_member(uid: str):
    actor, instance = _instance(uid)
    data = parse_body(NewMember)
    member = sharing.add_member(actor, db_session(), services().clock, instance, data.username, data.role,
                                settings=services().settings)
    return respond(member_out(member), 201)


@bp.put("/members/<username>")
@bp.patch("/members/<username>")
@doc("Change a member's role", tags=["sharing"], body=RoleChange, response=MemberOut)
def change_role(uid: str, username: str):
    actor, instance = _instance(uid)
    data = parse_body(RoleChange)
    member = sharing.change_role(actor, db_session(), services().clock, instance, username, data.role)
    return respond(member_out(member))


@bp.delete("/members/<username>")
@doc("Remove a member", tags=["sharing"], status=204)
def revoke_member(uid: str, username: str):
    actor, instance = _instance(uid)
    sharing.revoke_member(actor, db_session(), services().clock, instance, username)
    return "", 204


@bp.post("/support")
@doc("Support staff ask to join an instance (joined at once, or pending the owner's approval)", tags=["sharing"],
     response=SupportOut, status=202, extra_responses={201: "Joined at once"})
def request_support(uid: str):
    actor, instance = _instance(uid)
    joined = sharing.request_support_access(actor, db_session(), services().clock, instance)
    if isinstance(joined, InstanceMember):
        return respond(SupportOut(status="joined", member=member_out(joined)), 201)
    return respond(SupportOut(status="pending", message="the owner has been asked to approve",
                              prompt_until=joined.prompt_until), 202)


@bp.get("/support")
@doc("Pending support requests (owner)", tags=["sharing"], response=list[PendingSupportOut])
def pending_support(uid: str):
    actor, instance = _instance(uid)
    return respond(sharing.pending_support_requests(actor, db_session(), services().clock, instance))


@bp.post("/support/<username>/<any(approve, deny):answer>")
@doc("Approve or deny a support request (owner)", tags=["sharing"], response=SupportOut)
def answer_support(uid: str, username: str, answer: str):
    actor, instance = _instance(uid)
    member = sharing.answer_support_request(
        actor, db_session(), services().clock, instance, username, approve=answer == "approve"
    )
    return respond(SupportOut(status="approved" if member else "denied", member=member_out(member) if member else None))


# --- presence, support history, invitation links ----------------------------------------------
@bp.get("/presence")
@doc("Who is connected to an instance now (desktop and JupyterLab)", tags=["sharing"], response=PresenceEvent)
def presence(uid: str):
    actor, instance = _instance(uid)
    return respond(presence_service.presence_of(actor, db_session(), services().clock, instance))


@bp.get("/support/sessions")
@doc("Who helped on an instance, and when (owner)", tags=["sharing"], response=list[SupportSessionOut])
def support_sessions(uid: str):
    actor, instance = _instance(uid)
    return respond(presence_service.support_sessions(actor, db_session(), instance))


@bp.get("/invitations")
@doc("An instance's invitation links (owner)", tags=["sharing"], response=list[InvitationOut])
def list_invitations(uid: str):
    actor, instance = _instance(uid)
    return respond(invitations.list_invitations(actor, db_session(), services().clock, instance))


@bp.post("/invitations")
@doc("Make a single-use invitation link with a role (owner)", tags=["sharing"], body=NewInvitation,
     response=InvitationOut, status=201)
def create_invitation(uid: str):
    actor, instance = _instance(uid)
    data = parse_body(NewInvitation)
    svc = services()
    return respond(invitations.create_invitation(actor, db_session(), svc.clock, svc.settings, instance, data), 201)


@bp.delete("/invitations/<int:invitation_id>")
@doc("Withdraw an unused invitation link (owner)", tags=["sharing"], status=204)
def revoke_invitation(uid: str, invitation_id: int):
    actor, instance = _instance(uid)
    invitations.revoke_invitation(actor, db_session(), services().clock, instance, invitation_id)
    return "", 204


@bp.get("/view-links")
@doc("An instance's public view-only links to its desktop (owner)", tags=["sharing"], response=list[ViewLinkOut])
def list_view_links(uid: str):
    actor, instance = _instance(uid)
    return respond(viewlinks.list_view_links(actor, db_session(), services().clock, instance))


@bp.post("/view-links")
@doc("Make a public link that shows the desktop, view only, to anyone who has it, for a few hours (owner)",
     tags=["sharing"], body=NewViewLink, response=ViewLinkOut, status=201)
def create_view_link(uid: str):
    actor, instance = _instance(uid)
    data = parse_body(NewViewLink)
    svc = services()
    return respond(viewlinks.create_view_link(actor, db_session(), svc.clock, svc.settings, instance, data), 201)


@bp.delete("/view-links/<int:link_id>")
@doc("Revoke a view link now: it opens nothing more and its open desktops close (owner)", tags=["sharing"],
     response=ViewLinkOut)
def revoke_view_link(uid: str, link_id: int):
    actor, instance = _instance(uid)
    return respond(viewlinks.revoke_view_link(actor, db_session(), services().clock, instance, link_id))


redeem_bp = Blueprint("invitations_api", __name__, url_prefix="/api")


@redeem_bp.post("/invitations/redeem")
@doc("Join an instance with an invitation link (a logged-in browser)", tags=["sharing"], body=RedeemInvitation,
     response=RedeemedOut, status=201)
def redeem():
    data = parse_body(RedeemInvitation)
    return respond(invitations.redeem_invitation(current_actor(), db_session(), services().clock, data.token), 201)


@redeem_bp.get("/support/instances")
@doc("Instances the caller may help with, as support staff", tags=["sharing"], query=SupportQuery,
     response=list[SupportInstanceOut])
def support_instances():
    query = parse_query(SupportQuery)
    return respond(support.support_instances(current_actor(), db_session(), services().clock, query))
