"""REST: a one-time token to open an instance's desktop."""

from __future__ import annotations

from flask import Blueprint, jsonify

from visa.gateway import service
from visa.instances import service as instances
from visa.web.context import current_actor, db_session, services

bp = Blueprint("gateway_api", __name__, url_prefix="/api/instances")


@bp.post("/<uid>/connect")
def connect(uid: str):  # noqa: ANN201
    actor = current_actor()
    s = db_session()
    svc = services()
    instance = instances.get_instance(actor, s, uid)
    seconds = svc.settings.connect_token_seconds
    token, role, view_only = service.issue_connect_token(actor, s, svc.clock, instance, seconds)
    body = {
        "url": f"/ws/desktop/{uid}?token={token}",
        "expires_in": seconds,
        "view_only": view_only,
        "role": role.value,
    }
    # A token must not linger in a cache.
    return jsonify(body), 200, {"Cache-Control": "no-store"}
