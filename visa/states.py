"""The states of an instance's machine, shared by the clouds that report them and the instances that store them.

A ground module with no dependencies: ``visa.clouds`` sits below ``visa.instances`` and may not import it.
``visa.instances.models`` re-exports the enum beside the model that stores it.
"""

from __future__ import annotations

import enum


class InstanceState(enum.StrEnum):
    BUILDING = "BUILDING"
    STARTING = "STARTING"
    ACTIVE = "ACTIVE"
    PARTIALLY_ACTIVE = "PARTIALLY_ACTIVE"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    REBOOTING = "REBOOTING"
    MIGRATING = "MIGRATING"
    ACTIVE_MIGRATING = "ACTIVE_MIGRATING"
    DELETING = "DELETING"
    DELETED = "DELETED"
    ERROR = "ERROR"
    UNAVAILABLE = "UNAVAILABLE"
    UNKNOWN = "UNKNOWN"
