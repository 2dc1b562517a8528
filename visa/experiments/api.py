"""REST: the experiments the user belongs to, and open data anyone may ask to mount."""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint

from visa.experiments.models import Experiment
from visa.experiments.schemas import ExperimentOut, OpenDataQuery
from visa.experiments.service import experiments_of, search_open_data
from visa.openapi import doc, parse_query, respond
from visa.web.context import current_actor, db_session, services

bp = Blueprint("experiments_api", __name__, url_prefix="/api/experiments")


def _out(e: Experiment, now: datetime, *, member: bool = True) -> ExperimentOut:
    # The logbook is the team's own notebook: its address goes to the experiment's members only.
    return ExperimentOut(
        id=e.id, external_id=e.external_id, title=e.title,
        proposal=e.proposal.identifier, proposal_title=e.proposal.title,
        instrument=e.instrument.name,
        start_date=e.start_date.isoformat(), end_date=e.end_date.isoformat(),
        open_data=e.proposal.is_open_data(now), public_at=e.proposal.public_at,
        doi=e.doi, data_url=e.data_url, logbook_url=e.logbook_url if member else None,
    )


@bp.get("")
@doc("The caller's experiments", tags=["experiments"], response=list[ExperimentOut])
def list_experiments():
    actor = current_actor()
    now = services().clock.now()
    return respond([_out(e, now) for e in experiments_of(actor, db_session())])


@bp.get("/open-data")
@doc("Open data: experiments of any proposal whose embargo has ended (to mount read-only)",
     tags=["experiments"], query=OpenDataQuery, response=list[ExperimentOut])
def open_data():
    actor, query = current_actor(), parse_query(OpenDataQuery)
    clock = services().clock
    now = clock.now()
    return respond([_out(e, now, member=False) for e in search_open_data(actor, db_session(), clock, query)])
