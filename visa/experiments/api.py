"""REST: the experiments the user belongs to."""

from __future__ import annotations

from flask import Blueprint, jsonify

from visa.experiments.service import experiments_of
from visa.web.context import current_actor, db_session, services

bp = Blueprint("experiments_api", __name__, url_prefix="/api/experiments")


@bp.get("")
def list_experiments():  # noqa: ANN201
    actor = current_actor()
    now = services().clock.now()
    return jsonify([
        {
            "id": e.id, "external_id": e.external_id, "title": e.title,
            "proposal": e.proposal.identifier, "proposal_title": e.proposal.title,
            "instrument": e.instrument.name,
            "start_date": e.start_date.isoformat(), "end_date": e.end_date.isoformat(),
            "open_data": e.proposal.is_open_data(now),
        }
        for e in experiments_of(actor, db_session())
    ])
