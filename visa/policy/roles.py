"""The roles a user may hold: on the ground floor, so the policy can name them."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    ADMIN = "ADMIN"
    STAFF = "STAFF"
    IT_SUPPORT = "IT_SUPPORT"
    INSTRUMENT_SCIENTIST = "INSTRUMENT_SCIENTIST"
    INSTRUMENT_CONTROL = "INSTRUMENT_CONTROL"
    SCIENTIFIC_COMPUTING = "SCIENTIFIC_COMPUTING"
    GUEST = "GUEST"


STAFF_ROLES = frozenset({Role.ADMIN, Role.STAFF})


class ActorKind(enum.StrEnum):
    """Who acts. Only SYSTEM is the system: an anonymous actor is nobody, never the system."""

    SYSTEM = "SYSTEM"
    USER = "USER"
    ANONYMOUS = "ANONYMOUS"
