"""``visa bookings``: GPU bookings, listed and decided by an operator (as the system: the policy's
``booking.decide`` lets it decide on every booking, as an administrator does)."""

from __future__ import annotations

from typing import Any

import click
from pydantic import ValidationError

from visa.actor import SYSTEM
from visa.cli.common import emails_sent, emit, json_option, load_settings, open_database
from visa.clock import system_clock
from visa.types import MAX_ID

STATES = ("pending", "accepted", "refused", "cancelled")


class _BookingId(click.ParamType):
    """A booking's number (as ``visa bookings list`` shows it); one past the column would be a
    database error, not an unknown booking."""

    name = "id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        text = str(value).strip()
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_ID:
            self.fail(f"{text[:32]!r} is not a booking number (see visa bookings list)", param, ctx)
        return int(text)


_ID = _BookingId()


@click.group()
def bookings() -> None:
    """GPU bookings: list them, accept or refuse those waiting."""


def _row(b: Any) -> dict[str, Any]:
    from visa.bookings.serialize import booking_out

    return booking_out(b).model_dump(mode="json")


def _line(r: dict[str, Any]) -> str:
    beamtime = r["experiment"] or r["proposal"] or "-"
    return (f"{r['id']:>5}  {r['state']:9} {r['user']:16} {r['count']}x {r['flavour']:16} "
            f"{r['starts_on']}..{r['ends_on']}  {beamtime}")


@bookings.command("list")
@click.option("--state", type=click.Choice(STATES, case_sensitive=False), help="Only bookings in this state")
@click.option("--user", "username", help="Only this user's bookings")
@json_option
def bookings_list(state: str | None, username: str | None, as_json: bool) -> None:
    """Every booking, those waiting for a decision first, then by first day."""
    from visa.bookings.models import BookingState
    from visa.bookings.service import bookings_to_decide
    from visa.errors import NotFound
    from visa.users.service import get_user

    with open_database().sessionmaker() as s:
        user_id = None
        if username is not None:
            try:
                user_id = get_user(s, username).id
            except NotFound:
                raise click.BadParameter(f"no user {username[:64]!r}", param_hint="--user") from None
        found = bookings_to_decide(SYSTEM, s, state=BookingState(state.upper()) if state else None, user_id=user_id)
        rows = [_row(b) for b in found]
    emit(rows, as_json, _line)


def _decided(row: dict[str, Any], as_json: bool) -> None:
    emails_sent()
    emit(row, as_json, lambda r: f"booking {r['id']}: {r['state']}" + (f" ({r['response']})" if r["response"] else ""))


@bookings.command("accept")
@click.argument("booking_id", metavar="ID", type=_ID)
@click.option("--message", default="", help="A word for the user, in the email")
@json_option
def bookings_accept(booking_id: int, message: str, as_json: bool) -> None:
    """Accept a waiting booking: the calendar is read again, the cloud's row locked, and a full day
    refuses it. The user is told by email after the commit."""
    from visa.bookings import service
    from visa.services import Services

    data = _decision(message, "--message")
    settings = load_settings()
    host = Services(settings=settings, database=open_database())
    try:
        with host.database.unit_of_work() as s:
            row = _row(service.accept_booking(SYSTEM, s, system_clock, settings, host, booking_id, data))
    finally:
        host.close()
    _decided(row, as_json)


@bookings.command("refuse")
@click.argument("booking_id", metavar="ID", type=_ID)
@click.option("--reason", required=True, help="Why: sent to the user")
@json_option
def bookings_refuse(booking_id: int, reason: str, as_json: bool) -> None:
    """Refuse a waiting booking, saying why. The user is told by email after the commit."""
    from visa.bookings import service

    if not reason.strip():
        raise click.BadParameter("say why the booking is refused", param_hint="--reason")
    data = _decision(reason.strip(), "--reason")
    settings = load_settings()
    with open_database().unit_of_work() as s:
        row = _row(service.refuse_booking(SYSTEM, s, system_clock, settings, booking_id, data))
    _decided(row, as_json)


def _decision(text: str, option: str) -> Any:
    from visa.bookings.schemas import DecideBooking

    try:
        return DecideBooking(response=text)
    except ValidationError as exc:
        raise click.BadParameter(exc.errors()[0]["msg"], param_hint=option) from None
