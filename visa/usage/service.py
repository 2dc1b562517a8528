"""Sampling usage, pruning old samples, and reading them back as series for charts.

A sample counts, per cloud and flavour: live instances (any state but deleted), active
sessions (a browser seen or input in the last five minutes on a running desktop), and the
cores, memory and GPUs of the instances that hold them (not stopped, not in error).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, Float, Subquery, case, delete, func, literal, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from visa.actor import Actor
from visa.catalogue.models import Flavour, Plan
from visa.clock import Clock
from visa.clouds.models import Cloud
from visa.db import UTCDateTime
from visa.errors import InvalidInput
from visa.experiments.models import Experiment, Instrument, Proposal
from visa.instances.models import Instance, InstanceState, InstanceStatePeriod, instance_experiments
from visa.instances.service import ACTIVE_SESSION_WINDOW, RUNNING_STATES
from visa.policy import require
from visa.usage.models import TOTAL, UsageSample
from visa.usage.schemas import DIMENSIONS, UsageReportQuery
from visa.users.models import User

Span = Literal["day", "week", "month"]
# How far back each chart looks, and the width of one point (samples in it are averaged).
SPANS: dict[str, tuple[timedelta, timedelta]] = {
    "day": (timedelta(days=1), timedelta(minutes=5)),
    "week": (timedelta(days=7), timedelta(hours=1)),
    "month": (timedelta(days=30), timedelta(hours=4)),
}
METRICS = ("instances", "active_sessions", "cores", "memory_mb", "gpus")


def take_sample(session: Session, clock: Clock) -> list[UsageSample]:
    """Count now, in one query; one row per cloud and flavour in use, plus the totals row."""
    now = clock.now()
    since = now - ACTIVE_SESSION_WINDOW
    holds = Instance.state.in_(RUNNING_STATES)
    active = (Instance.state.in_([InstanceState.ACTIVE, InstanceState.PARTIALLY_ACTIVE])
              & or_(Instance.last_interaction_at >= since, Instance.last_seen_at >= since))
    rows = session.execute(
        select(
            Cloud.name, Flavour.name, func.count(Instance.id),
            func.coalesce(func.sum(case((active, 1), else_=0)), 0),
            func.coalesce(func.sum(case((holds, Flavour.cores), else_=0)), 0),
            func.coalesce(func.sum(case((holds, Flavour.memory_mb), else_=0)), 0),
            func.coalesce(func.sum(case((holds, Flavour.gpu_count), else_=0)), 0),
        )
        .select_from(Instance)
        .join(Cloud, Cloud.id == Instance.cloud_id)
        .join(Plan, Plan.id == Instance.plan_id)
        .join(Flavour, Flavour.id == Plan.flavour_id)
        .where(Instance.deleted_at.is_(None), Instance.state != InstanceState.DELETED)
        .group_by(Cloud.name, Flavour.name)
    ).all()
    samples = [
        UsageSample(taken_at=now, cloud=cloud, flavour=flavour, instances=int(n), active_sessions=int(a),
                    cores=int(c), memory_mb=int(m), gpus=int(g))
        for cloud, flavour, n, a, c, m, g in rows
    ]
    total = UsageSample(taken_at=now, cloud=TOTAL, flavour=TOTAL,
                        **{k: sum(getattr(s, k) for s in samples) for k in METRICS})
    session.add_all([*samples, total])
    session.flush()
    return samples + [total]


def prune(session: Session, clock: Clock, keep: timedelta) -> int:
    result = session.execute(delete(UsageSample).where(UsageSample.taken_at < clock.now() - keep))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Series:
    span: str
    start: datetime
    end: datetime
    step_seconds: int
    times: list[int]  # epoch seconds of each point
    totals: dict[str, list[float | None]]  # metric -> value per point (None: not sampled)
    by_flavour: dict[str, dict[str, list[float | None]]]  # "cloud/flavour" -> metric -> values


def usage_series(actor: Actor, session: Session, clock: Clock, span: Span) -> Series:
    """The samples of the last day, week or month, averaged per point of the chart."""
    require(actor, "view_usage")
    length, step = SPANS[span]
    end = clock.now()
    start = end - length
    step_s = int(step.total_seconds())
    first = int(start.timestamp()) // step_s * step_s
    count = (int(end.timestamp()) - first) // step_s + 1
    times = [first + i * step_s for i in range(count)]
    sums: dict[str, dict[int, dict[str, float]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))
    ticks: dict[int, set[datetime]] = defaultdict(set)
    rows = session.scalars(
        select(UsageSample).where(UsageSample.taken_at >= start, UsageSample.taken_at <= end)
        .order_by(UsageSample.taken_at)
    )
    for row in rows:
        i = (int(row.taken_at.timestamp()) - first) // step_s
        key = TOTAL if row.cloud == TOTAL else f"{row.cloud}/{row.flavour}"
        if key == TOTAL:
            ticks[i].add(row.taken_at)
        for metric in METRICS:
            sums[key][i][metric] += getattr(row, metric)

    def line(key: str, metric: str) -> list[float | None]:
        return [round(sums[key][i][metric] / len(ticks[i]), 2) if ticks[i] else None for i in range(count)]

    totals = {m: line(TOTAL, m) for m in METRICS}
    by_flavour = {k: {m: line(k, m) for m in METRICS} for k in sorted(sums) if k != TOTAL}
    return Series(span, start, end, step_s, times, totals, by_flavour)


# --- the usage report: hours held per owner, proposal, instrument, flavour or cloud ----------
# An instance counts while its machine holds its flavour's cores, memory and GPUs: in every
# state but STOPPED, ERROR and DELETED (the states the samples count resources in, too).
HOLDING_STATES = tuple(sorted(RUNNING_STATES))
Column = ColumnElement[str] | InstrumentedAttribute[str]
DEFAULT_REPORT_DAYS = 30


@dataclass(frozen=True)
class ReportRow:
    key: str | None
    instances: int
    hours: float
    core_hours: float
    memory_gb_hours: float
    gpu_hours: float


@dataclass(frozen=True)
class Report:
    start: datetime
    end: datetime
    by: str
    states: list[str]
    filters: dict[str, str]
    rows: list[ReportRow]
    total: ReportRow


def _utc(value: datetime | None) -> datetime | None:
    return value if value is None or value.tzinfo is not None else value.replace(tzinfo=UTC)


def report_period(now: datetime, start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """The period asked for, in UTC; ``end`` at most now (what has not happened holds nothing)."""
    start, end = _utc(start), _utc(end)
    end = min(end or now, now)
    start = start or end - timedelta(days=DEFAULT_REPORT_DAYS)
    if start >= end:
        raise InvalidInput(f"from ({start.isoformat()}) must be before to ({end.isoformat()}, at most now)",
                           field="from")
    return start, end


def usage_report(actor: Actor, session: Session, clock: Clock, q: UsageReportQuery) -> Report:
    """Instance-, core-, memory- and GPU-hours held in the period, one row per ``q.by``.

    Aggregated by the database from the state periods that overlap the period, each clipped to
    it. An instance with experiments is split equally among them (its hours under a proposal
    or an instrument are the share of its experiments there): the rows add up to the total."""
    require(actor, "view_usage")
    start, end = report_period(clock.now(), q.from_, q.to)
    postgresql = session.get_bind().dialect.name == "postgresql"
    period = InstanceStatePeriod
    begin_at, end_at = literal(start, UTCDateTime()), literal(end, UTCDateTime())
    first, last = (func.greatest, func.least) if postgresql else (func.max, func.min)
    lo, hi = first(period.started_at, begin_at), last(func.coalesce(period.ended_at, end_at), end_at)
    # date_part is a double precision (extract's numeric is several times slower to sum).
    seconds: ColumnElement[float] = (func.date_part("epoch", hi - lo) if postgresql
                                     else (func.julianday(hi) - func.julianday(lo)) * 86400.0)
    held = (
        select(period.instance_id.label("instance_id"), func.sum(seconds).label("seconds"))
        .where(period.state.in_(HOLDING_STATES), period.started_at < end,
               or_(period.ended_at.is_(None), period.ended_at > start))
        .group_by(period.instance_id)
        .subquery("held")
    )
    query = (
        select(held.c.seconds)
        .select_from(held)
        .join(Instance, Instance.id == held.c.instance_id)
        .join(Plan, Plan.id == Instance.plan_id)
        .join(Flavour, Flavour.id == Plan.flavour_id)
    )
    filters = {name: value for name in DIMENSIONS if (value := getattr(q, name))}
    keys: dict[str, Column] = {"flavour": Flavour.name}
    if q.by == "owner" or "owner" in filters:
        query = query.join(User, User.id == Instance.owner_id)
        keys["owner"] = User.username
    if q.by == "cloud" or "cloud" in filters:
        query = query.join(Cloud, Cloud.id == Instance.cloud_id)
        keys["cloud"] = Cloud.name
    for name in ("owner", "cloud", "flavour"):
        if name in filters:
            query = query.where(keys[name] == filters[name])
    share: ColumnElement[float] = literal(1.0, Float)
    # An instance's place in the total: every instance is in it once, though a split one is in several rows.
    once: ColumnElement[int] = literal(1)
    split: list[str] = [name for name in ("proposal", "instrument") if name == q.by or name in filters]
    if split:
        shares = _experiment_shares(split, filters)
        if set(split) & set(filters):
            query = query.join(shares, shares.c.instance_id == Instance.id)
        else:  # an instance with no experiment is a row of its own (key NULL), whole
            query = query.outerjoin(shares, shares.c.instance_id == Instance.id)
        share = func.coalesce(shares.c.share, 1.0)
        once = case((func.coalesce(shares.c.nth, 1) == 1, 1), else_=0)
        if "proposal" in split:
            query = query.outerjoin(Proposal, Proposal.id == shares.c.proposal_id)
            keys["proposal"] = Proposal.identifier
        if "instrument" in split:
            query = query.outerjoin(Instrument, Instrument.id == shares.c.instrument_id)
            keys["instrument"] = Instrument.name
    key = keys[q.by]
    part = held.c.seconds * share / 3600.0
    # Within a row an instance comes once (its shares are grouped by what the row is).
    sums = (func.count(), func.sum(part), func.sum(part * Flavour.cores), func.sum(part * Flavour.memory_mb) / 1024.0,
            func.sum(part * Flavour.gpu_count), func.sum(once))
    if postgresql:
        # The rows and the total in one pass: ROLLUP adds the total, GROUPING() tells it apart
        # from the row of the instances with no experiment (whose key is NULL too).
        found = session.execute(query.with_only_columns(func.grouping(key), key, *sums).group_by(func.rollup(key)))
        results = [(bool(is_total), k, figures) for is_total, k, *figures in found]
    else:
        results = [(False, k, figures) for k, *figures in session.execute(query.with_only_columns(key, *sums)
                                                                           .group_by(key))]
        results.append((True, None, list(session.execute(query.with_only_columns(*sums)).one())))
    rows = [_row(k, *figures[:5]) for is_total, k, figures in results if not is_total]
    rows.sort(key=lambda r: (-r.core_hours, -r.hours, r.key is None, r.key or ""))
    totals = [_row(None, figures[5], *figures[1:5]) for is_total, _k, figures in results if is_total]
    total = totals[0] if totals else _row(None, 0, 0, 0, 0, 0)  # nothing held: ROLLUP has no row at all
    return Report(start, end, q.by, [s.value for s in HOLDING_STATES], filters, rows, total)


def _experiment_shares(names: list[str], filters: dict[str, str]) -> Subquery:
    """Per instance and proposal and/or instrument (``names``, their ids): its experiments' share
    of its hours (each experiment an equal part), filtered; ``nth`` numbers an instance's rows."""
    ie = instance_experiments.c
    each = (
        select(ie.instance_id, Experiment.proposal_id, Experiment.instrument_id,
               (literal(1.0, Float) / func.count().over(partition_by=ie.instance_id)).label("share"))
        .join(Experiment, Experiment.id == ie.experiment_id)
        .subquery("each")
    )
    ids = {"proposal": each.c.proposal_id, "instrument": each.c.instrument_id}
    named = {"proposal": (Proposal.id, Proposal.identifier), "instrument": (Instrument.id, Instrument.name)}
    query = select(each.c.instance_id, *(ids[n] for n in names), func.sum(each.c.share).label("share"),
                   func.row_number().over(partition_by=each.c.instance_id).label("nth"))
    for name in names:
        if name in filters:
            pk, label = named[name]
            query = query.where(ids[name] == select(pk).where(label == filters[name]).scalar_subquery())
    return query.group_by(each.c.instance_id, *(ids[n] for n in names)).subquery("shares")


def _row(key: str | None, instances: Any, hours: Any, cores: Any, memory_gb: Any, gpus: Any) -> ReportRow:
    # Rounded to the second's share of an hour and a bit: SQLite's date arithmetic is a float.
    def r(value: Any) -> float:
        return round(float(value or 0.0), 4)

    return ReportRow(key, int(instances or 0), r(hours), r(cores), r(memory_gb), r(gpus))


CSV_COLUMNS = ("key", "instances", "hours", "core_hours", "memory_gb_hours", "gpu_hours")


def report_csv(report: Report) -> str:
    """The report as CSV: a header (the first column named by ``by``), its rows, then the total."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([report.by, *CSV_COLUMNS[1:]])
    for row in [*report.rows, report.total]:
        key = "(total)" if row is report.total else ("(none)" if row.key is None else row.key)
        writer.writerow([key, row.instances, row.hours, row.core_hours, row.memory_gb_hours, row.gpu_hours])
    return out.getvalue()
