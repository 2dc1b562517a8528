"""REST: an instance's members and support access (``/api/instances/<uid>/members``, ``/support``)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from visa.instances import service, sharing
from visa.instances.models import InstanceMember
from visa.instances.schemas import NewMember, RoleChange
from visa.web.context import current_actor, db_session, services
from visa.web.io import parse_body

bp = Blueprint("members_api", __name__, url_prefix="/api/instances/<uid>")


def member_dict(m: InstanceMember) -> dict[str, object]:
    return {"username": m.user.username, "full_name": m.user.full_name, "role": m.role.value,
            "since": m.created_at.isoformat()}


def _instance(uid: str):  # noqa: ANN202
    actor = current_actor()
    return actor, service.get_instance(actor, db_session(), uid)


@bp.get("/members")
def list_members(uid: str):  # noqa: ANN201
    actor, instance = _instance(uid)
    return jsonify([member_dict(m) for m in sharing.list_members(actor, db_session(), instance)])


@bp.post("/members")
def add_member(uid: str):  # noqa: ANN201
    actor, instance = _instance(uid)
    data = parse_body(NewMember)
    member = sharing.add_member(actor, db_session(), services().clock, instance, data.username, data.role)
    return jsonify(member_dict(member)), 201


@bp.put("/members/<username>")
@bp.patch("/members/<username>")
def change_role(uid: str, username: str):  # noqa: ANN201
    actor, instance = _instance(uid)
    data = parse_body(RoleChange)
    member = sharing.change_role(actor, db_session(), services().clock, instance, username, data.role)
    return jsonify(member_dict(member))


@bp.delete("/members/<username>")
def revoke_member(uid: str, username: str):  # noqa: ANN201
    actor, instance = _instance(uid)
    sharing.revoke_member(actor, db_session(), services().clock, instance, username)
    return "", 204


@bp.post("/support")
def request_support(uid: str):  # noqa: ANN201
    actor, instance = _instance(uid)
    member = sharing.request_support_access(actor, db_session(), services().clock, instance)
    if member is None:
        return jsonify({"status": "pending", "message": "the owner has been asked to approve"}), 202
    return jsonify({"status": "joined", "member": member_dict(member)}), 201


@bp.get("/support")
def pending_support(uid: str):  # noqa: ANN201
    actor, instance = _instance(uid)
    return jsonify(sharing.pending_support_requests(actor, db_session(), services().clock, instance))


@bp.post("/support/<username>/<any(approve, deny):answer>")
def answer_support(uid: str, username: str, answer: str):  # noqa: ANN201
    actor, instance = _instance(uid)
    member = sharing.answer_support_request(
        actor, db_session(), services().clock, instance, username, approve=answer == "approve"
    )
    return jsonify({"status": "approved" if member else "denied", "member": member and member_dict(member)})
