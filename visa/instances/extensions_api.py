"""REST: lifetime extension requests (owners ask; admins list, accept and refuse)."""

from __future__ import annotations

from flask import Blueprint, request

from visa.errors import InvalidInput
from visa.instances import extensions, service
from visa.instances.models import ExtensionState, Instance
from visa.instances.schemas import ExtensionOut, ExtensionQuery, HandleExtension, RequestExtension
from visa.instances.serialize import extension_out
from visa.openapi import doc, respond
from visa.web.context import current_actor, db_session, services
from visa.web.io import parse_body

bp = Blueprint("extensions_api", __name__, url_prefix="/api")


@bp.post("/instances/<uid>/extensions")
@doc("Ask for a longer lifetime (accepted at once where the image's rule says so)", tags=["extensions"],
     body=RequestExtension, response=ExtensionOut, status=201)
def request_extension(uid: str):
    actor = current_actor()
    s, svc = db_session(), services()
    instance = service.get_instance(actor, s, uid)
    req = extensions.request_extension(actor, s, svc.clock, svc.settings, instance,
                                       parse_body(RequestExtension))
    return respond(extension_out(req, instance), 201)


@bp.get("/extensions")
@doc("Extension requests to handle (admins): pending by default", tags=["extensions", "admin"],
     query=ExtensionQuery, response=list[ExtensionOut])
def list_extensions():
    actor = current_actor()
    raw = request.args.get("state", "PENDING").upper()
    if raw not in {*ExtensionState.__members__, "ALL"}:
        raise InvalidInput(f"state must be one of {', '.join(ExtensionState)} or ALL", field="state")
    s = db_session()
    items = extensions.list_extensions(actor, s, None if raw == "ALL" else ExtensionState(raw))
    return respond([extension_out(r, s.get(Instance, r.instance_id)) for r in items])


@bp.post("/extensions/<int:request_id>/<any(accept, refuse):decision>")
@doc("Accept (optionally until another date) or refuse an extension request", tags=["extensions", "admin"],
     body=HandleExtension, response=ExtensionOut)
def handle_extension(request_id: int, decision: str):
    actor = current_actor()
    s, svc = db_session(), services()
    data = parse_body(HandleExtension)
    handle = extensions.accept_extension if decision == "accept" else extensions.refuse_extension
    req = handle(actor, s, svc.clock, svc.settings, request_id, data)
    return respond(extension_out(req, s.get(Instance, req.instance_id)))
