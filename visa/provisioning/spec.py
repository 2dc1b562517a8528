"""What provisioning renders from: a plain, frozen description of one machine.

``visa.instances.spec.boot_spec`` builds it from the stored instance (and checks the open data's
embargo there); everything in :mod:`visa.provisioning` reads only this, never a database object.
Values are as stored: the renderers check each one before it reaches a path, a line or a command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from visa.catalogue.models import Protocol


@dataclass(frozen=True)
class Owner:
    username: str
    full_name: str | None = None
    home_path: str | None = None
    uid_number: int | None = None
    gid_number: int | None = None
    extra_gids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ExperimentData:
    """One experiment's data place: ``<root>/<proposal>/<beamline>``."""

    id: int
    proposal: str
    beamline: str
    # Only the data of experiments the owner is a member of is mounted.
    owner_is_member: bool = True


@dataclass(frozen=True)
class Port:
    protocol: Protocol
    port: int
    optional: bool = False


@dataclass(frozen=True)
class BootSpec:
    """One machine: its instance's values, owner, image, experiments and the open data asked for."""

    id: int
    uid: str
    secret: str
    owner: Owner
    image_name: str
    screen_width: int
    screen_height: int
    keyboard_layout: str
    image_options: dict[str, Any] = field(default_factory=dict)
    ports: tuple[Port, ...] = ()
    experiments: tuple[ExperimentData, ...] = ()
    # Experiments whose embargo is over (checked by the builder) that the owner asked to see.
    open_data: tuple[ExperimentData, ...] = ()
    # A home of its own: the owner's home share is not mounted (others act as the owner here).
    own_home: bool = False

    def port_of(self, protocol: Protocol) -> int | None:
        return next((p.port for p in self.ports if p.protocol == protocol), None)
