"""Whether a flavour can be had now: the catalogue's flavour asked of its cloud's real capacity
(``Provider.capacity``: Placement's inventories and usages on OpenStack, the host on the local
cloud). An answer of "cannot say" never refuses: the cloud decides at creation."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.catalogue.models import Flavour
from visa.clouds.models import Cloud
from visa.clouds.service import CloudHost, Room, room_for
from visa.errors import NotFound
from visa.policy import require
from visa.settings import Settings


@dataclass(frozen=True)
class FlavourRoom:
    flavour: Flavour
    cloud: str
    room: Room


def flavour_cloud(session: Session, settings: Settings, flavour: Flavour) -> Cloud | None:
    """The cloud a flavour's machines go to: its own, else the default one."""
    if flavour.cloud_id is not None:
        return session.get(Cloud, flavour.cloud_id)
    return session.scalar(select(Cloud).where(Cloud.name == settings.default_cloud))


def room_on(host: CloudHost, cloud: Cloud, flavour: Flavour) -> Room:
    if not cloud.enabled:
        return Room(False, f"cloud {cloud.name!r} is disabled", {})
    return room_for(host, cloud.name, flavour.cloud_flavour_ref, flavour.cores, flavour.memory_mb)


def capacity_by_flavour(actor: Actor, session: Session, host: CloudHost, settings: Settings,
                        names: list[str] | None = None) -> list[FlavourRoom]:
    """Each visible flavour (or those named: an unknown or hidden one is NotFound) and its room now."""
    require(actor, "view_capacity")
    query = select(Flavour).where(Flavour.visible.is_(True)).order_by(Flavour.name)
    if names:
        query = query.where(Flavour.name.in_(names))
    flavours = list(session.scalars(query))
    unknown = sorted(set(names or ()) - {f.name for f in flavours})
    if unknown:
        raise NotFound(f"no flavour {', '.join(repr(n[:64]) for n in unknown)}", field="flavour")
    out = []
    for flavour in flavours:
        cloud = flavour_cloud(session, settings, flavour)
        if cloud is None:
            out.append(FlavourRoom(flavour, "", Room(False, "no cloud is configured for this flavour", {})))
        else:
            out.append(FlavourRoom(flavour, cloud.name, room_on(host, cloud, flavour)))
    return out
