"""Clouds visa provisions on; several may be configured at once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from visa.db import Base, UTCDateTime
from visa.types import JsonDict


class Cloud(Base):
    """A configured cloud: ``kind`` picks the provider class, ``config`` is its settings.

    Secrets in ``config`` may be written as ``{"env": "VAR"}`` so they stay out of the database.
    """

    __tablename__ = "clouds"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(JsonDict, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"<Cloud {self.name!r} kind={self.kind}>"
