"""Bookings: GPU machines of one size, held for the days of a beamtime."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Column, Date, ForeignKey, Index, Integer, Table, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from visa.db import Base, UTCDateTime
from visa.types import enum_column

if TYPE_CHECKING:
    from visa.catalogue.models import Flavour
    from visa.clouds.models import Cloud
    from visa.experiments.models import Experiment, Instrument, Proposal
    from visa.instances.models import Instance
    from visa.users.models import User


class BookingState(enum.StrEnum):
    PENDING = "PENDING"
    ACCEPTED = "ACCEPTED"
    REFUSED = "REFUSED"
    CANCELLED = "CANCELLED"


# The machines made from a booking: counted in it, not again among the running machines.
booking_instances = Table(
    "booking_instances",
    Base.metadata,
    Column("booking_id", ForeignKey("bookings.id", ondelete="CASCADE"), primary_key=True),
    Column("instance_id", ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True, unique=True),
)


class Booking(Base):
    """``count`` machines of ``flavour`` on the days ``starts_on`` to ``ends_on`` (UTC, both
    included), for an experiment or a proposal. Only an accepted booking holds its units."""

    __tablename__ = "bookings"
    __table_args__ = (Index("ix_bookings_cloud_state_days", "cloud_id", "state", "starts_on", "ends_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    flavour_id: Mapped[int] = mapped_column(ForeignKey("flavours.id", ondelete="RESTRICT"))
    # The cloud the flavour's machines went to when it was asked for: its pool is the one held.
    cloud_id: Mapped[int] = mapped_column(ForeignKey("clouds.id", ondelete="CASCADE"))
    experiment_id: Mapped[int | None] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    proposal_id: Mapped[int | None] = mapped_column(ForeignKey("proposals.id", ondelete="CASCADE"), index=True)
    count: Mapped[int] = mapped_column(Integer)
    starts_on: Mapped[date] = mapped_column(Date)
    ends_on: Mapped[date] = mapped_column(Date)
    comment: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[BookingState] = mapped_column(enum_column(BookingState, length=16))
    response: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    handled_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    handled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(foreign_keys=[user_id], lazy="joined")
    handled_by: Mapped[User | None] = relationship(foreign_keys=[handled_by_id])
    flavour: Mapped[Flavour] = relationship(lazy="joined")
    cloud: Mapped[Cloud] = relationship()
    experiment: Mapped[Experiment | None] = relationship()
    proposal: Mapped[Proposal | None] = relationship()
    # The beamtimes of a proposal's booking: all its experiments.
    proposal_experiments: Mapped[list[Experiment]] = relationship(
        primaryjoin="Booking.proposal_id == foreign(Experiment.proposal_id)", viewonly=True, lazy="selectin")
    instances: Mapped[list[Instance]] = relationship(secondary=booking_instances, viewonly=True)

    @property
    def beamtimes(self) -> list[Experiment]:
        return [self.experiment] if self.experiment is not None else list(self.proposal_experiments)

    @property
    def instruments(self) -> list[Instrument]:
        """The instruments of its beamtimes (their scientists may decide on it)."""
        return list({e.instrument.id: e.instrument for e in self.beamtimes}.values())

    def __repr__(self) -> str:
        return f"<Booking {self.id} {self.count}x{self.flavour_id} {self.starts_on}..{self.ends_on} {self.state}>"
