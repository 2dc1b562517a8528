"""Column types shared by the models."""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import JSON, Enum
from sqlalchemy.dialects.postgresql import JSONB


def enum_column(enum_cls: type[enum.Enum], length: int = 32) -> Enum:
    """Enums stored as their value in a VARCHAR: portable and readable in SQL."""
    return Enum(
        enum_cls,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda cls: [m.value for m in cls],
        validate_strings=True,
    )


JsonDict: Any = JSON().with_variant(JSONB(), "postgresql")
