"""Lifetime extensions: the owner asks, an admin accepts (with a date) or refuses, or the
image's rule accepts at once (``Image.autoaccept_extension``: ALL, STAFF or NONE).

Auto-acceptance goes no further than one maximum lifetime from now (the longest rule for
the owner's roles on the flavour); a longer request waits for an admin. Accepting moves
``terminates_at`` and clears the lifetime warning, so a new warning precedes the new date.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.audit.service import record
from visa.catalogue.models import AutoAccept
from visa.catalogue.service import max_lifetime_hours
from visa.clock import Clock
from visa.errors import Conflict, InvalidInput, NotFound
from visa.instances import emails
from visa.instances.models import ExtensionRequest, ExtensionState, Instance
from visa.instances.schemas import HandleExtension, RequestExtension
from visa.mail.outbox import enqueue, enqueue_many
from visa.policy import require
from visa.settings import Settings
from visa.users.models import STAFF_ROLES, Role
from visa.users.service import holders_of


def _auto_limit(instance: Instance, now: datetime, settings: Settings) -> datetime | None:
    """Until when this instance's image accepts by itself, or None."""
    rule = instance.plan.image.autoaccept_extension
    roles = instance.owner.roles_at(now)
    if rule == AutoAccept.NONE or (rule == AutoAccept.STAFF and not roles & STAFF_ROLES):
        return None
    return now + timedelta(hours=max_lifetime_hours(instance.plan.flavour, roles, settings.lifetimes,
                                                    instance.owner.group_names()))


def request_extension(actor: Actor, session: Session, clock: Clock, settings: Settings, instance: Instance,
                      data: RequestExtension) -> ExtensionRequest:
    require(actor, "instance.extend", instance)
    now = clock.now()
    if data.requested_until <= instance.terminates_at:
        raise InvalidInput("ask for a date after the current end of the instance's lifetime", field="until")
    _within_booking(instance, data.requested_until)
    pending = session.scalar(select(ExtensionRequest.id).where(
        ExtensionRequest.instance_id == instance.id, ExtensionRequest.state == ExtensionState.PENDING))
    if pending is not None:
        raise Conflict("an extension request for this instance is already waiting for an answer")
    request = ExtensionRequest(
        instance_id=instance.id, requester_id=actor.id, requested_until=data.requested_until, comment=data.comment,
        state=ExtensionState.PENDING, created_at=now, response="",
    )
    session.add(request)
    session.flush()
    record(actor, session, clock, "extension.request", target_type="instance", target_id=instance.uid,
           request=request.id, until=data.requested_until.isoformat())
    limit = _auto_limit(instance, now, settings)
    if limit is not None and data.requested_until <= limit:
        _accept(actor, session, clock, settings, request, instance, data.requested_until, "accepted automatically")
    else:
        # Each administrator is told once (one outbox row each), after the commit.
        admins = holders_of(session, Role.ADMIN, now)
        enqueue_many(session, clock, settings, [(emails.EXTENSION_REQUESTED, request.id, str(a.id)) for a in admins])
    return request


def _within_booking(instance: Instance, until: datetime) -> None:
    """A machine made from a booking lives no longer than the booking."""
    if instance.booked_until is not None and until > instance.booked_until:
        raise InvalidInput(f"this machine was made from a booking that ends on {instance.booked_until:%Y-%m-%d %H:%M} "
                           "UTC: it cannot live longer", field="until")


def pending_with_context(actor: Actor, session: Session) -> list[tuple[ExtensionRequest, Instance]]:
    """The requests waiting for an answer, each with its (live) instance, oldest first."""
    return [(r, i) for r in list_extensions(actor, session)
            if (i := session.get(Instance, r.instance_id)) is not None and i.deleted_at is None]


def list_extensions(actor: Actor, session: Session, state: ExtensionState | None = ExtensionState.PENDING
                    ) -> list[ExtensionRequest]:
    require(actor, "handle_extensions")
    q = select(ExtensionRequest).order_by(ExtensionRequest.created_at, ExtensionRequest.id)
    if state is not None:
        q = q.where(ExtensionRequest.state == state)
    return list(session.scalars(q))


def _pending(session: Session, request_id: int) -> tuple[ExtensionRequest, Instance]:
    request = session.get(ExtensionRequest, request_id)
    if request is None:
        raise NotFound("no such extension request")
    if request.state != ExtensionState.PENDING:
        raise Conflict(f"this request has already been {request.state.value.lower()}")
    instance = session.get(Instance, request.instance_id)
    if instance is None or instance.deleted_at is not None:
        raise Conflict("the instance has been deleted")
    return request, instance


def accept_extension(actor: Actor, session: Session, clock: Clock, settings: Settings, request_id: int,
                     data: HandleExtension) -> ExtensionRequest:
    require(actor, "handle_extensions")
    request, instance = _pending(session, request_id)
    until = data.granted_until or request.requested_until
    if until <= clock.now() or until <= instance.terminates_at:
        raise InvalidInput("the new date must be later than now and than the current end", field="until")
    _within_booking(instance, until)
    _accept(actor, session, clock, settings, request, instance, until, data.response)
    return request


def _accept(actor: Actor, session: Session, clock: Clock, settings: Settings, request: ExtensionRequest,
            instance: Instance, until: datetime, response: str) -> None:
    now = clock.now()
    request.state, request.granted_until, request.response = ExtensionState.ACCEPTED, until, response
    request.handled_by_id, request.handled_at = actor.id, now
    instance.terminates_at = until
    instance.lifetime_warned_at = None  # a new warning will precede the new date
    session.flush()
    record(actor, session, clock, "extension.accept", target_type="instance", target_id=instance.uid,
           request=request.id, until=until.isoformat())
    enqueue(session, clock, settings, emails.EXTENSION_HANDLED, request.id, "ACCEPTED")


def refuse_extension(actor: Actor, session: Session, clock: Clock, settings: Settings, request_id: int,
                     data: HandleExtension) -> ExtensionRequest:
    require(actor, "handle_extensions")
    request, instance = _pending(session, request_id)
    request.state, request.response = ExtensionState.REFUSED, data.response
    request.handled_by_id, request.handled_at = actor.id, clock.now()
    session.flush()
    record(actor, session, clock, "extension.refuse", target_type="instance", target_id=instance.uid,
           request=request.id)
    enqueue(session, clock, settings, emails.EXTENSION_HANDLED, request.id, "REFUSED")
    return request
