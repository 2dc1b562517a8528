"""Sampling usage, pruning old samples, and reading them back as series for charts.

A sample counts, per cloud and flavour: live instances (any state but deleted), active
sessions (a browser seen or input in the last five minutes on a running desktop), and the
cores, memory and GPUs of the instances that hold them (not stopped, not in error).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import case, delete, func, or_, select
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.catalogue.models import Flavour, Plan
from visa.clock import Clock
from visa.clouds.models import Cloud
from visa.instances.models import Instance, InstanceState
from visa.instances.service import ACTIVE_SESSION_WINDOW, RUNNING_STATES
from visa.policy import require
from visa.usage.models import TOTAL, UsageSample

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
