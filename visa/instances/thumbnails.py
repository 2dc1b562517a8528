"""Desktop thumbnails: the owner's browser sends a small JPEG of the screen; members see it.

Only the owner writes (a shared user's view must not replace the owner's picture); the
picture is checked to be a JPEG of bounded size, since it is served back to other users.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.clock import Clock
from visa.errors import InvalidInput
from visa.instances.models import Instance, InstanceThumbnail
from visa.policy import require

MAX_BYTES = 200 * 1024
JPEG_START = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"


def check_jpeg(data: bytes) -> None:
    if len(data) > MAX_BYTES:
        raise InvalidInput(f"the thumbnail is {len(data)} bytes; at most {MAX_BYTES} are accepted", field="body")
    # Start and end markers: enough to refuse HTML, SVG or truncated uploads served back as images.
    if len(data) < 64 or not data.startswith(JPEG_START) or not data.rstrip(b"\x00").endswith(JPEG_END):
        raise InvalidInput("the thumbnail must be a JPEG image", field="body")


def put_thumbnail(actor: Actor, session: Session, clock: Clock, instance: Instance, data: bytes) -> InstanceThumbnail:
    require(actor, "instance.thumbnail.write", instance)
    check_jpeg(data)
    thumb = session.get(InstanceThumbnail, instance.id)
    if thumb is None:
        thumb = InstanceThumbnail(instance_id=instance.id, image=data, updated_at=clock.now())
        session.add(thumb)
    else:
        thumb.image = data
        thumb.updated_at = clock.now()
    session.flush()
    return thumb


def get_thumbnail(actor: Actor, session: Session, instance: Instance) -> InstanceThumbnail | None:
    require(actor, "instance.view", instance)
    return session.get(InstanceThumbnail, instance.id)


def thumbnail_times(session: Session, instance_ids: list[int]) -> dict[int, datetime]:
    """When each of these instances' thumbnail last changed (none: no thumbnail), in one query."""
    if not instance_ids:
        return {}
    rows = session.execute(
        select(InstanceThumbnail.instance_id, InstanceThumbnail.updated_at)
        .where(InstanceThumbnail.instance_id.in_(instance_ids))
    )
    return {iid: at for iid, at in rows}
