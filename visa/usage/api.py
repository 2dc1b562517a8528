"""REST: usage over time for the admin dashboard's charts, and the usage report."""

from __future__ import annotations

from flask import Blueprint, Response

from visa.openapi import doc, parse_query, respond
from visa.usage.schemas import UsageQuery, UsageReportOut, UsageReportQuery, UsageRowOut, UsageSeriesOut
from visa.usage.service import Report, report_csv, usage_report, usage_series
from visa.web.context import current_actor, db_session, services

bp = Blueprint("usage_api", __name__, url_prefix="/api/admin")


@bp.get("/usage")
@doc("Instances, active sessions, cores, memory and GPUs in use over the last day, week or month",
     tags=["admin"], query=UsageQuery, response=UsageSeriesOut)
def usage():
    q = parse_query(UsageQuery)
    series = usage_series(current_actor(), db_session(), services().clock, q.span)
    return respond(UsageSeriesOut(**series.__dict__))


def _report() -> Report:
    q = parse_query(UsageReportQuery)
    return usage_report(current_actor(), db_session(), services().clock, q)  # type: ignore[arg-type]


@bp.get("/usage/report")
@doc("Instance-, core-, memory- and GPU-hours held over a period, per owner, proposal, instrument, flavour "
     "or cloud", tags=["admin"], query=UsageReportQuery, response=UsageReportOut,
     description="An instance counts while it holds its flavour's resources (every state but STOPPED, ERROR "
                 "and DELETED), clipped to the period. Its hours are split equally among its experiments "
                 "under proposal and instrument, so that the rows add up to the total.")
def usage_report_json():
    r = _report()
    return respond(UsageReportOut(
        start=r.start, end=r.end, by=r.by, states=r.states, filters=r.filters,
        rows=[UsageRowOut(**row.__dict__) for row in r.rows], total=UsageRowOut(**r.total.__dict__),
    ))


@bp.get("/usage/report.csv")
@doc("The usage report as CSV: a row per owner, proposal, instrument, flavour or cloud, then the total",
     tags=["admin"], query=UsageReportQuery, response="text/csv")
def usage_report_csv():
    r = _report()
    name = f"visa-usage-{r.by}-{r.start:%Y%m%d}-{r.end:%Y%m%d}.csv"
    return Response(report_csv(r), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
