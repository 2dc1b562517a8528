"""REST: system notifications for users (and their acknowledgement), and admin management."""

from __future__ import annotations

from flask import Blueprint

from visa.announcements import service
from visa.announcements.schemas import NotificationIn, NotificationOut
from visa.announcements.serialize import notification_out
from visa.openapi import MAX_ID, Ok, doc, respond
from visa.web.context import current_actor, db_session, services
from visa.web.io import parse_body

bp = Blueprint("notifications_api", __name__, url_prefix="/api")


@bp.get("/notifications")
@doc("Notifications in force that the caller has not acknowledged (banners and modals)",
     tags=["notifications"], response=list[NotificationOut])
def active():
    return respond([notification_out(n) for n in service.active_for(current_actor(), db_session(), services().clock)])


@bp.post(f"/notifications/<int(max={MAX_ID}):notification_id>/ack")
@doc("Acknowledge a notification (it is no longer shown to the caller)", tags=["notifications"], response=Ok)
def ack(notification_id: int):
    service.acknowledge(current_actor(), db_session(), services().clock, notification_id)
    return respond(Ok())


@bp.get("/admin/notifications")
@doc("All notifications, with how many users acknowledged each", tags=["admin", "notifications"],
     response=list[NotificationOut])
def list_all():
    return respond([notification_out(n, count) for n, count in service.list_all(current_actor(), db_session())])


@bp.post("/admin/notifications")
@doc("Publish a notification", tags=["admin", "notifications"], body=NotificationIn,
     response=NotificationOut, status=201)
def create():
    data = parse_body(NotificationIn)
    n = service.create(current_actor(), db_session(), services().clock, **data.model_dump())
    return respond(notification_out(n, 0), 201)


@bp.get(f"/admin/notifications/<int(max={MAX_ID}):notification_id>")
@doc("One notification", tags=["admin", "notifications"], response=NotificationOut)
def get(notification_id: int):
    return respond(notification_out(service.get(current_actor(), db_session(), notification_id)))


@bp.put(f"/admin/notifications/<int(max={MAX_ID}):notification_id>")
@doc("Change a notification (users who acknowledged it see it again)", tags=["admin", "notifications"],
     body=NotificationIn, response=NotificationOut)
def update(notification_id: int):
    data = parse_body(NotificationIn)
    n = service.update(current_actor(), db_session(), services().clock, notification_id, **data.model_dump())
    return respond(notification_out(n, 0))


@bp.delete(f"/admin/notifications/<int(max={MAX_ID}):notification_id>")
@doc("Withdraw a notification", tags=["admin", "notifications"], response=Ok)
def delete(notification_id: int):
    service.delete(current_actor(), db_session(), services().clock, notification_id)
    return respond(Ok())
