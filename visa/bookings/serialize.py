"""Bookings as answers."""

from __future__ import annotations

from visa.bookings.models import Booking
from visa.bookings.schemas import BookingOut


def booking_out(booking: Booking) -> BookingOut:
    return BookingOut(
        id=booking.id, user=booking.user.username, user_full_name=booking.user.full_name or "",
        flavour=booking.flavour.name, cloud=booking.cloud.name, count=booking.count,
        starts_on=booking.starts_on, ends_on=booking.ends_on,
        experiment=booking.experiment.external_id if booking.experiment else None,
        proposal=booking.proposal.identifier if booking.proposal else None,
        instrument=sorted(i.name for i in booking.instruments), comment=booking.comment,
        state=booking.state.value, response=booking.response, created_at=booking.created_at,
        handled_by=booking.handled_by.username if booking.handled_by else None, handled_at=booking.handled_at,
        instances=[i.uid for i in booking.instances if i.deleted_at is None],
    )
