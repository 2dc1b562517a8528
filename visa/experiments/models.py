"""Instruments, proposals and experiments, as the facility's user office knows them."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

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
    # Where the experiment's data is described and found, as the user office gives them: its DOI
    # (for papers to cite), the data portal's page and the electronic logbook's (http/https only).
    doi: Mapped[str | None] = mapped_column(String(255))
    data_url: Mapped[str | None] = mapped_column(Text)
    logbook_url: Mapped[str | None] = mapped_column(Text)

    proposal: Mapped[Proposal] = relationship(lazy="joined")
    instrument: Mapped[Instrument] = relationship(lazy="joined")
    members: Mapped[list[User]] = relationship(secondary=experiment_members)

    @property
    def doi_url(self) -> str | None:
        """The DOI's resolver link (https://doi.org/...), its characters escaped for a URL."""
        return doi_url(self.doi) if self.doi else None

    def __repr__(self) -> str:
        return f"<Experiment {self.external_id!r} {self.proposal_id}@{self.instrument_id}>"


def doi_url(doi: str) -> str:
    return "https://doi.org/" + quote(doi, safe="/:;()._-")

