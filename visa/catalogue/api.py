"""REST: the plans a user may pick."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from sqlalchemy import select

from visa.catalogue.service import max_lifetime_hours, plans_for
from visa.errors import InvalidInput
from visa.experiments.models import Experiment
from visa.policy import allowed
from visa.web.context import current_actor, db_session, services

bp = Blueprint("catalogue_api", __name__, url_prefix="/api")


@bp.get("/plans")
def plans():  # noqa: ANN201
    actor = current_actor()
    s = db_session()
    try:
        ids = [int(x) for x in request.args.getlist("experiment")]
    except ValueError:
        raise InvalidInput("experiment must be a number", field="experiment") from None
    experiments = list(s.scalars(select(Experiment).where(Experiment.id.in_(ids)))) if ids else []
    if not allowed(actor, "experiments.use_any"):
        experiments = [e for e in experiments if actor.id in {m.id for m in e.members}]
    lifetimes = services().settings.lifetimes
    return jsonify([
        {
            "id": p.id,
            "preset": p.preset,
            "image": {"name": p.image.name, "environment": p.image.environment, "version": p.image.version,
                      "description": p.image.description, "icon": p.image.icon,
                      "protocols": [pr.protocol.value for pr in p.image.protocols]},
            "flavour": {"name": p.flavour.name, "description": p.flavour.description, "cores": p.flavour.cores,
                        "memory_mb": p.flavour.memory_mb, "gpu_kind": p.flavour.gpu_kind,
                        "gpu_count": p.flavour.gpu_count},
            "max_lifetime_hours": max_lifetime_hours(p.flavour, actor.roles, lifetimes),
        }
        for p in plans_for(actor, s, experiments)
    ])
