"""The usage report over a year on a large PostgreSQL: 100,000 instances (10,000 users, 5,000
proposals on 30 instruments, every tenth instance with a second experiment), each with a year of
state periods (started and stopped a few times: some 900,000 periods).

    python -m bench.usage_report                 # seed, time every grouping, drop
    python -m bench.usage_report --scale 0.1     # 10,000 instances: quick runs
    python -m bench.usage_report --explain       # PostgreSQL's plan of the report by proposal

Each grouping (owner, proposal, instrument, flavour, cloud) of the year up to now is asked
``--runs`` times (min, median, max) through the service the API calls (``visa.usage.service.usage_report``, its
statements compiled and run as for a request), after one warm-up; then once through the API
(``GET /api/admin/usage/report`` in Flask's test client: the JSON answer included). Goal: under
1 s for the slowest grouping's median; the machine's load average is printed beside the figures,
as other work on it slows PostgreSQL and the report alike. PostgreSQL: ``VISA_BENCH_PG_URL`` (default the local server, trust auth); a database of
its own is made and dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench import api_latency

GOAL_S = 1.0
DIMENSIONS = ("owner", "proposal", "instrument", "flavour", "cloud")

# A year of each instance's life: it starts on a day of the year, then runs and stops in turns
# (PERIODS periods of 1 to 6 days, its phase and lengths from its id), BUILDING first; an
# instance the seed deleted ends with its last period closed.
PERIODS = 9
HISTORY = f"""
INSERT INTO instance_state_periods (instance_id, state, started_at, ended_at)
SELECT i.id,
       CASE WHEN k = 0 THEN 'BUILDING' WHEN k % 2 = 1 THEN 'ACTIVE' ELSE 'STOPPED' END,
       :year_ago + (i.id % 300) * interval '1 day' + (k * (1 + i.id % 5)) * interval '1 day'
         + CASE WHEN k = 0 THEN interval '0' ELSE interval '10 minutes' END,
       CASE WHEN k = {PERIODS - 1} AND i.state <> 'DELETED' THEN NULL
            ELSE :year_ago + (i.id % 300) * interval '1 day' + ((k + 1) * (1 + i.id % 5)) * interval '1 day'
              + interval '10 minutes' END
FROM instances i CROSS JOIN generate_series(0, {PERIODS - 1}) AS k
"""


def seed_history(url: str, now: datetime) -> dict[str, int]:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM instance_state_periods"))
        conn.execute(text(HISTORY), {"year_ago": now - timedelta(days=365)})
        # Every tenth instance works on a second experiment (another proposal, another instrument).
        conn.execute(text(
            "INSERT INTO instance_experiments (instance_id, experiment_id) "
            "SELECT i.id, e.id FROM instances i JOIN experiments e "
            "ON e.id = 1 + (i.id * 7) % (SELECT count(*) FROM experiments) "
            "WHERE i.id % 10 = 0 ON CONFLICT DO NOTHING"))
        counts = {
            "periods": conn.execute(text("SELECT count(*) FROM instance_state_periods")).scalar_one(),
            "instance_experiments": conn.execute(text("SELECT count(*) FROM instance_experiments")).scalar_one(),
        }
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE instance_state_periods"))
        conn.execute(text("VACUUM ANALYZE instance_experiments"))
    engine.dispose()
    return counts


def measure(url: str, now: datetime, runs: int, explain: bool) -> dict[str, Any]:
    from visa.actor import SYSTEM
    from visa.clock import FrozenClock
    from visa.db import Database
    from visa.usage.schemas import UsageReportQuery
    from visa.usage.service import usage_report

    database = Database(url)
    clock = FrozenClock(now)
    year = {"from": now - timedelta(days=365), "to": now}
    results: dict[str, Any] = {}
    with database.sessionmaker() as s:
        for by in DIMENSIONS:
            q = UsageReportQuery.model_validate({**year, "by": by})
            usage_report(SYSTEM, s, clock, q)  # warm-up: the plan cache and the buffers
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                report = usage_report(SYSTEM, s, clock, q)
                times.append(time.perf_counter() - started)
            results[by] = {"min_ms": round(min(times) * 1000, 1), "median_ms": round(statistics.median(times) * 1000, 1),
                           "max_ms": round(max(times) * 1000, 1), "rows": len(report.rows),
                           "instances": report.total.instances, "core_hours": report.total.core_hours}
        filtered = UsageReportQuery.model_validate({**year, "by": "owner", "instrument": "bench07"})
        started = time.perf_counter()
        usage_report(SYSTEM, s, clock, filtered)
        results["owner, one instrument"] = {"median_ms": round((time.perf_counter() - started) * 1000, 1)}
        if explain:
            _explain(s, clock, UsageReportQuery.model_validate({**year, "by": "proposal"}))
    results["api"] = _through_the_api(database, clock, year)
    database.dispose()
    return results


def _explain(session: Any, clock: Any, q: Any) -> None:
    """Print the plans of the report's statements, as PostgreSQL ran them."""
    from sqlalchemy import event

    from visa.actor import SYSTEM
    from visa.usage.service import usage_report

    statements: list[tuple[str, Any]] = []

    def keep(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", keep)
    try:
        usage_report(SYSTEM, session, clock, q)
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    for statement, parameters in statements:
        plan = session.connection().exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
        print("\n".join(r[0] for r in plan), "\n", flush=True)


def _through_the_api(database: Any, clock: Any, year: dict[str, datetime]) -> dict[str, Any]:
    from visa.actor import actor_for
    from visa.auth.tokens import create_api_token
    from visa.settings import Settings
    from visa.users.models import User
    from visa.web.app import create_app

    with database.unit_of_work() as s:
        admin = s.query(User).filter_by(username="benchadmin").one()
        _, token = create_api_token(actor_for(admin, clock.now()), s, clock, name="usage bench")
    app = create_app(Settings(database_url=database.url, secret_key="bench"), database=database, clock=clock)
    client = app.test_client()
    query = (f"/api/admin/usage/report?by=proposal&from={year['from']:%Y-%m-%dT%H:%M:%SZ}"
             f"&to={year['to']:%Y-%m-%dT%H:%M:%SZ}")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get(query, headers=headers).status_code == 200  # warm-up
    started = time.perf_counter()
    answer = client.get(query, headers=headers)
    elapsed = time.perf_counter() - started
    assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
    return {"by proposal, ms": round(elapsed * 1000, 1), "bytes": len(answer.get_data())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the data set (default 1: 100,000 instances)")
    parser.add_argument("--runs", type=int, default=5, help="reports timed per grouping (default 5)")
    parser.add_argument("--explain", action="store_true", help="print PostgreSQL's plans of the report by proposal")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args(argv)

    name = f"visa_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(api_latency.PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(api_latency.PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        info = api_latency.seed(url, args.scale)
        now = datetime.now(UTC).replace(microsecond=0)
        counts = seed_history(url, now)
        print(f"seeded {api_latency.INSTANCES:,} instances, {counts['periods']:,} state periods, "
              f"{counts['instance_experiments']:,} instance experiments in {info['seed_seconds']} s+ (database {name})",
              flush=True)
        results = measure(url, now, args.runs, args.explain)
        print(f"\nA year's usage report, {api_latency.INSTANCES:,} instances on PostgreSQL (goal < {GOAL_S:g} s)")
        print(f"{'by':<24}{'min ms':>10}{'median ms':>10}{'max ms':>10}{'rows':>8}{'instances':>11}{'core-hours':>14}")
        for by in DIMENSIONS:
            r = results[by]
            print(f"{by:<24}{r['min_ms']:>10}{r['median_ms']:>10}{r['max_ms']:>10}{r['rows']:>8}{r['instances']:>11}"
                  f"{r['core_hours']:>14,.0f}")
        print(f"{'owner, one instrument':<34}{results['owner, one instrument']['median_ms']:>10}")
        print(f"through the API (by proposal, JSON of {results['api']['bytes']:,} bytes): {results['api']['by proposal, ms']} ms")
        typical = max(results[by]["median_ms"] for by in DIMENSIONS) / 1000
        print(json.dumps({"instances": api_latency.INSTANCES, **counts, "load_average": os.getloadavg(),
                          "results": results, "goal_met": typical < GOAL_S}, indent=1))
    finally:
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
