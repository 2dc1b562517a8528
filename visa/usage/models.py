"""One sample of what visa's machines hold at a moment, per cloud and flavour."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from visa.db import Base, UTCDateTime

# The row of a sample that holds the totals (also written when nothing runs, so that a chart
# knows the moment was sampled and shows zero rather than a gap).
TOTAL = ""


class UsageSample(Base):
    """Names, not ids: a sample outlives the flavour or cloud it counted."""

    __tablename__ = "usage_samples"
    __table_args__ = (UniqueConstraint("taken_at", "cloud", "flavour"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    cloud: Mapped[str] = mapped_column(String(64))
    flavour: Mapped[str] = mapped_column(String(64))
    instances: Mapped[int] = mapped_column(Integer)
    active_sessions: Mapped[int] = mapped_column(Integer)
    cores: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    gpus: Mapped[int] = mapped_column(Integer)

    def __repr__(self) -> str:
        return f"<UsageSample {self.taken_at:%Y-%m-%d %H:%M} {self.cloud or '*'}/{self.flavour or '*'} {self.instances}>"
