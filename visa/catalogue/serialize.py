"""Plans as the API shows them to the users who may pick them."""

from __future__ import annotations

from collections.abc import Iterable

from visa.catalogue.models import Plan
from visa.catalogue.schemas import PlanFlavourOut, PlanImageOut, PlanOut
from visa.catalogue.service import max_lifetime_hours
from visa.settings import LifetimeSettings
from visa.users.models import Role


def plan_out(plan: Plan, roles: Iterable[Role], lifetimes: LifetimeSettings, groups: Iterable[str] = ()) -> PlanOut:
    image, flavour = plan.image, plan.flavour
    return PlanOut(
        id=plan.id,
        preset=plan.preset,
        image=PlanImageOut(
            name=image.name, environment=image.environment, version=image.version, description=image.description,
            icon=image.icon, protocols=[pr.protocol.value for pr in image.protocols],
        ),
        flavour=PlanFlavourOut(
            name=flavour.name, description=flavour.description, cores=flavour.cores, memory_mb=flavour.memory_mb,
            gpu_kind=flavour.gpu_kind, gpu_count=flavour.gpu_count,
        ),
        max_lifetime_hours=max_lifetime_hours(flavour, roles, lifetimes, groups),
    )
