"""Instruments, proposals and experiments, as the facility's user office knows them."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Column, Date, ForeignKey, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from visa.db import Base, UTCDateTime

if TYPE_CHECKING:
    from visa.users.models import User

experiment_members = Table(
    "experiment_members",
    Base.metadata,
    Column("experiment_id", ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True),
)

# Instrument scientists support the users of their instruments.
instrument_scientists = Table(
    "instrument_scientists",
    Base.metadata,
    Column("instrument_id", ForeignKey("instruments.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Instrument(Base):
    """A beamline or instrument, e.g. ``id21``."""

    __tablename__ = "instruments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)

    scientists: Mapped[list[User]] = relationship(secondary=instrument_scientists)

    def __repr__(self) -> str:
        return f"<Instrument {self.name!r}>"


class Proposal(Base):
    """A proposal, e.g. ``ev280``; its data becomes open at ``public_at``."""

    __tablename__ = "proposals"

    id: Mapped[int] = mapped_column(primary_key=True)
    identifier: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(Text, default="")
    public_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def is_open_data(self, when: datetime) -> bool:
        return self.public_at is not None and self.public_at <= when

    def __repr__(self) -> str:
        return f"<Proposal {self.identifier!r}>"


class Experiment(Base):
    """A proposal's time on an instrument."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str] = mapped_column(String(64), unique=True)
    proposal_id: Mapped[int] = mapped_column(ForeignKey("proposals.id", ondelete="CASCADE"), index=True)
    instrument_id: Mapped[int] = mapped_column(ForeignKey("instruments.id", ondelete="RESTRICT"), index=True)
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date] = mapped_column(Date)
    title: Mapped[str] = mapped_column(Text, default="")

    proposal: Mapped[Proposal] = relationship(lazy="joined")
    instrument: Mapped[Instrument] = relationship(lazy="joined")
    members: Mapped[list[User]] = relationship(secondary=experiment_members)

    def __repr__(self) -> str:
        return f"<Experiment {self.external_id!r} {self.proposal_id}@{self.instrument_id}>"

