"""Column and input types shared by the models and the schemas."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema
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


class Input(BaseModel):
    """What a client or an operator sends (a body, a query string, a catalogue or import entry):
    a field not declared is refused (a misspelt one would leave its default in force, silently),
    and strings lose their surrounding spaces."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# Database ids are 32-bit integers: larger numbers never name anything, so input refuses them
# up front instead of letting the database overflow.
MAX_ID = 2**31 - 1
DbId = Annotated[int, Field(ge=1, le=MAX_ID)]


# Times in answers keep their offset as Python writes it ("+00:00"), the form the API has always given.
Timestamp = Annotated[
    datetime,
    PlainSerializer(lambda v: v.isoformat(), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]
