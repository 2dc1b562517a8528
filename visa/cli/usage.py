"""``visa usage``: the usage report, for operators and scripts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from visa.actor import SYSTEM
from visa.cli.common import emit, json_option, open_database
from visa.usage.schemas import DIMENSIONS


@click.group()
def usage() -> None:
    """Usage accounted per owner, proposal, instrument, flavour and cloud."""


class _Time(click.ParamType):
    """A date (midnight) or an ISO 8601 time; without a zone, UTC."""

    name = "date"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not a date (2026-01-31) nor an ISO 8601 time", param, ctx)


@usage.command("report")
@click.option("--from", "start", type=_Time(), help="Start (a date: its midnight, UTC); default 30 days before --to")
@click.option("--to", "end", type=_Time(), help="End, excluded; default and at most: now")
@click.option("--by", type=click.Choice(DIMENSIONS), default="proposal", show_default=True, help="One row per")
@click.option("--owner", help="Only this owner's instances")
@click.option("--proposal", help="Only the share of this proposal")
@click.option("--instrument", help="Only the share of this instrument")
@click.option("--flavour", help="Only instances of this flavour")
@click.option("--cloud", help="Only instances on this cloud")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (the rows, then the total)")
@json_option
def usage_report(start: datetime | None, end: datetime | None, by: str, as_csv: bool, as_json: bool,
                 **filters: str | None) -> None:
    """Instance-, core-, memory- and GPU-hours held over a period (docs: admin guide, Usage report)."""
    from visa.clock import system_clock
    from visa.usage.schemas import UsageReportQuery
    from visa.usage.service import report_csv
    from visa.usage.service import usage_report as report_of

    q = UsageReportQuery.model_validate({"from": start, "to": end, "by": by, **filters})
    with open_database().sessionmaker() as s:
        report = report_of(SYSTEM, s, system_clock, q)
    if as_csv:
        click.echo(report_csv(report), nl=False)
        return
    rows = [{by: r.key, **{k: v for k, v in r.__dict__.items() if k != "key"}} for r in report.rows]
    total = {by: "(total)", **{k: v for k, v in report.total.__dict__.items() if k != "key"}}
    if as_json:
        emit({"from": report.start.isoformat(), "to": report.end.isoformat(), "by": by, "filters": report.filters,
              "rows": rows, "total": total}, True, str)
        return
    click.echo(f"from {report.start.isoformat()} to {report.end.isoformat()}, by {by}")
    click.echo(f"{by:24} {'instances':>9} {'hours':>12} {'core-hours':>12} {'memory GB-h':>12} {'GPU-hours':>10}")
    emit([*rows, total], False, lambda r: (
        f"{'(none)' if r[by] is None else r[by]:24} {r['instances']:>9} {r['hours']:>12,.1f} "
        f"{r['core_hours']:>12,.1f} {r['memory_gb_hours']:>12,.1f} {r['gpu_hours']:>10,.1f}"))
