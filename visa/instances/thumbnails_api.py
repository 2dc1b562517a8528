"""REST: an instance's desktop thumbnail (raw JPEG in, raw JPEG out)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from visa.errors import NotFound
from visa.instances import service, thumbnails
from visa.instances.schemas import ThumbnailOut
from visa.openapi import doc, respond
from visa.web.context import current_actor, db_session, services

bp = Blueprint("thumbnails_api", __name__, url_prefix="/api/instances")


@bp.put("/<uid>/thumbnail")
@doc("Upload the desktop thumbnail (raw JPEG)", tags=["instances"], body="image/jpeg", response=ThumbnailOut)
def put(uid: str):
    actor = current_actor()
    s = db_session()
    instance = service.get_instance(actor, s, uid)
    # Read at most one byte past the limit: the size check needs no more.
    data = request.stream.read(thumbnails.MAX_BYTES + 1)
    thumb = thumbnails.put_thumbnail(actor, s, services().clock, instance, data)
    return respond(ThumbnailOut(uid=uid, updated_at=thumb.updated_at, bytes=len(thumb.image)))


@bp.get("/<uid>/thumbnail")
@doc("The desktop thumbnail (JPEG)", tags=["instances"], response="image/jpeg",
     extra_responses={304: "Not modified"})
def get(uid: str):
    actor = current_actor()
    s = db_session()
    thumb = thumbnails.get_thumbnail(actor, s, service.get_instance(actor, s, uid))
    if thumb is None:
        raise NotFound("no thumbnail yet")
    resp = Response(thumb.image, mimetype="image/jpeg")
    resp.headers["Cache-Control"] = "private, no-cache"
    resp.set_etag(f"{uid}-{int(thumb.updated_at.timestamp() * 1000)}")
    resp.last_modified = thumb.updated_at
    return resp.make_conditional(request)
