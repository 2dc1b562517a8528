"""REST: usage over time for the admin dashboard's charts."""

from __future__ import annotations

from flask import Blueprint

from visa.openapi import doc, parse_query, respond
from visa.usage.schemas import UsageQuery, UsageSeriesOut
from visa.usage.service import usage_series
from visa.web.context import current_actor, db_session, services

bp = Blueprint("usage_api", __name__, url_prefix="/api/admin")


@bp.get("/usage")
@doc("Instances, active sessions, cores, memory and GPUs in use over the last day, week or month",
     tags=["admin"], query=UsageQuery, response=UsageSeriesOut)
def usage():
    q = parse_query(UsageQuery)
    series = usage_series(current_actor(), db_session(), services().clock, q.span)
    return respond(UsageSeriesOut(**series.__dict__))
