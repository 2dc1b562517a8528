"""REST: lifetime extension requests (owners ask; admins list, accept and refuse)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from visa.errors import InvalidInput
from visa.instances import extensions, service
from visa.instances.models import ExtensionRequest, ExtensionState, Instance
from visa.instances.schemas import HandleExtension, RequestExtension
from visa.web.context import current_actor, db_session, services
from visa.web.io import parse_body

bp = Blueprint("extensions_api", __name__, url_prefix="/api")


def extension_dict(req: ExtensionRequest, instance: Instance | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": req.id,
        "state": req.state.value,
        "requested_until": req.requested_until.isoformat(),
        "granted_until": req.granted_until.isoformat() if req.granted_until else None,
        "comment": req.comment,
        "response": req.response,
        "created_at": req.created_at.isoformat(),
        "handled_at": req.handled_at.isoformat() if req.handled_at else None,
    }
    if instance is not None:
        body["instance"] = {
            "uid": instance.uid, "name": instance.name, "owner": instance.owner.username,
            "terminates_at": instance.terminates_at.isoformat(),
        }
    return body


@bp.post("/instances/<uid>/extensions")
def request_extension(uid: str):  # noqa: ANN201
    actor = current_actor()
    s, svc = db_session(), services()
    instance = service.get_instance(actor, s, uid)
    req = extensions.request_extension(actor, s, svc.clock, svc.settings, instance,
                                       parse_body(RequestExtension))
    return jsonify(extension_dict(req, instance)), 201


@bp.get("/extensions")
def list_extensions():  # noqa: ANN201
    actor = current_actor()
    raw = request.args.get("state", "PENDING").upper()
    if raw not in {*ExtensionState.__members__, "ALL"}:
        raise InvalidInput(f"state must be one of {', '.join(ExtensionState)} or ALL", field="state")
    s = db_session()
    items = extensions.list_extensions(actor, s, None if raw == "ALL" else ExtensionState(raw))
    return jsonify([extension_dict(r, s.get(Instance, r.instance_id)) for r in items])


@bp.post("/extensions/<int:request_id>/<any(accept, refuse):decision>")
def handle_extension(request_id: int, decision: str):  # noqa: ANN201
    actor = current_actor()
    s, svc = db_session(), services()
    data = parse_body(HandleExtension)
    handle = extensions.accept_extension if decision == "accept" else extensions.refuse_extension
    req = handle(actor, s, svc.clock, svc.settings, request_id, data)
    return jsonify(extension_dict(req, s.get(Instance, req.instance_id)))
