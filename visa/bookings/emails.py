"""The emails bookings send: to those who decide, when one is asked for; to the user, when it is
decided. Importing this module registers the kinds with ``visa.mail.outbox``."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace
from typing import Any

from sqlalchemy.orm import Session

from visa.bookings.models import Booking, BookingState
from visa.mail.outbox import kind
from visa.settings import Settings
from visa.users.models import User

BOOKING_REQUESTED = "booking_requested"
BOOKING_DECIDED = "booking_decided"


# Examples of what each kind gives its templates: `visa check-config` renders a facility's
# replacements with them.
_USER = SimpleNamespace(username="ada", full_name="Ada Lovelace", email="ada@example.org")
_BOOKING = SimpleNamespace(
    count=2, starts_on=date(2026, 12, 24), ends_on=date(2026, 12, 26), comment="Tomography reconstruction",
    state="ACCEPTED", response="", user=_USER, flavour=SimpleNamespace(name="esrf.gpu.a40", cores=16, memory_mb=65536),
    experiment=SimpleNamespace(external_id="ev280-id21-1", title="XRF mapping"),
    proposal=SimpleNamespace(identifier="ev280", title="Trace elements in Roman glass"),
)
_URL = "https://visa.example.org/bookings"


def _url(settings: Settings) -> str:
    return f"{settings.base_url.rstrip('/')}/bookings"


@kind(BOOKING_REQUESTED, "booking_requested", sample={"decider": _USER, "booking": _BOOKING, "user": _USER, "url": _URL})
def booking_requested(session: Session, settings: Settings, booking_id: int, stamp: str
                      ) -> tuple[str, dict[str, Any]] | None:
    """To one who decides (``stamp`` is their user id), while the booking still waits."""
    booking = session.get(Booking, booking_id)
    decider = session.get(User, int(stamp)) if stamp.isdigit() else None
    if booking is None or booking.state != BookingState.PENDING or decider is None or not decider.active:
        return None
    return decider.email or "", {"decider": decider, "booking": booking, "user": booking.user, "url": _url(settings)}


@kind(BOOKING_DECIDED, "booking_decided", sample={"booking": _BOOKING, "user": _USER, "url": _URL})
def booking_decided(session: Session, settings: Settings, booking_id: int, stamp: str
                    ) -> tuple[str, dict[str, Any]] | None:
    booking = session.get(Booking, booking_id)
    if booking is None or booking.state.value != stamp:
        return None  # decided otherwise since (cancelled)
    return booking.user.email or "", {"booking": booking, "user": booking.user, "url": _url(settings)}
