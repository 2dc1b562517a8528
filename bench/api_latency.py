"""REST API latency on a large PostgreSQL: 10,000 users and 100,000 instances.

    python -m bench.api_latency                      # seed, serve, load, report, drop the database
    python -m bench.api_latency --seconds 20 --concurrency 1,16
    python -m bench.api_latency --keep               # keep the database (its name is printed)

Measured from a second process (an httpx load generator with N concurrent connections)
against one uvicorn process serving visa on loopback:

* a user's home list, ``GET /api/instances`` (a user with 10 instances, 2 of them shared);
* an admin page of 50 instances, ``GET /api/admin/instances?per_page=50`` (newest first,
  100,000 to sort and count);
* an admin filtered page, ``GET /api/admin/instances?per_page=50&state=STOPPED&sort=-terminates_at``.

The server process counts SQL statements per request (a SQLAlchemy ``before_cursor_execute``
listener, bench mode only) and returns the count in an ``X-Query-Count`` header: a list that
loaded its relations one row at a time (N+1) would show it at once. Seeding uses COPY.
PostgreSQL: ``VISA_BENCH_PG_URL`` (default the local server, trust auth); a database of its
own is made and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import os
import random
import secrets
import socket
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("VISA_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
USERS = 10_000
INSTANCES = 100_000
EXPERIMENTS = 5_000
STATES = [("ACTIVE", 55), ("STOPPED", 25), ("BUILDING", 3), ("STARTING", 2), ("ERROR", 5), ("DELETED", 10)]


# --- seeding --------------------------------------------------------------------------------


def _copy(cur: Any, table: str, columns: list[str], rows: list[tuple]) -> None:
    buf = io.StringIO()
    for row in rows:
        buf.write(
            "\t".join("\\N" if v is None else str(v).replace("\\", "\\\\").replace("\t", " ") for v in row)
        )
        buf.write("\n")
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        copy.write(buf.getvalue())


def seed(url: str) -> dict[str, Any]:
    """Schema, catalogue, users, experiments and instances; returns the tokens to use."""
    import psycopg

    import visa.models  # noqa: F401
    from visa.actor import SYSTEM, actor_for
    from visa.auth.tokens import create_api_token
    from visa.catalogue.service import apply_files
    from visa.clock import system_clock
    from visa.clouds.models import Cloud
    from visa.db import Database
    from visa.migrate import upgrade
    from visa.users.models import Role, RoleGrant, User

    rng = random.Random(42)
    started = time.perf_counter()
    database = Database(url)
    upgrade(database.engine)
    now = datetime.now(UTC)
    with database.unit_of_work() as s:
        s.add(Cloud(name="local", kind="local", config={}, enabled=True, created_at=now))
        s.flush()
        apply_files(SYSTEM, s, system_clock, [ROOT / "flavours", ROOT / "images"])
    with database.engine.connect() as conn:
        plan_ids = [r[0] for r in conn.execute(text("SELECT id FROM plans WHERE enabled ORDER BY id"))]
        cloud_id = conn.execute(text("SELECT id FROM clouds")).scalar_one()

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as pg, pg.cursor() as cur:
        ts = now.isoformat()
        _copy(
            cur,
            "users",
            ["id", "username", "full_name", "email", "instance_quota", "active", "created_at"],
            [
                (i, f"user{i:05d}", f"User {i}", f"user{i}@example.org", 10, "t", ts)
                for i in range(1, USERS + 1)
            ],
        )
        _copy(cur, "instruments", ["id", "name"], [(1000 + i, f"bench{i:02d}") for i in range(1, 31)])
        _copy(
            cur,
            "proposals",
            ["id", "identifier", "title"],
            [(i, f"ev{i:05d}", f"Proposal {i}") for i in range(1, EXPERIMENTS + 1)],
        )
        _copy(
            cur,
            "experiments",
            ["id", "external_id", "proposal_id", "instrument_id", "start_date", "end_date", "title"],
            [
                (i, f"ev{i:05d}-1", i, 1001 + i % 30, "2026-01-05", "2026-01-08", f"Experiment {i}")
                for i in range(1, EXPERIMENTS + 1)
            ],
        )
        members = {(1 + (u - 1) // 2 % EXPERIMENTS, u) for u in range(1, USERS + 1)}
        members |= {(rng.randint(1, EXPERIMENTS), rng.randint(1, USERS)) for _ in range(USERS)}
        _copy(cur, "experiment_members", ["experiment_id", "user_id"], sorted(members))

        weights = [w for _, w in STATES]
        instances, owners_members, links = [], [], []
        for i in range(1, INSTANCES + 1):
            owner = 1 + (i - 1) % USERS
            state = rng.choices([s for s, _ in STATES], weights)[0]
            created = now - timedelta(minutes=INSTANCES - i)
            deleted = (created + timedelta(hours=1)).isoformat() if state == "DELETED" else None
            instances.append(
                (
                    i,
                    uuid.uuid4().hex[:12],
                    f"analysis {i}",
                    "",
                    owner,
                    rng.choice(plan_ids),
                    cloud_id,
                    f"srv-{i}",
                    state,
                    1280,
                    800,
                    "en-us",
                    secrets.token_hex(8),
                    "{}",
                    created.isoformat(),
                    (created + timedelta(days=14)).isoformat(),
                    created.isoformat(),
                    created.isoformat(),
                    deleted,
                )
            )
            owners_members.append((i, owner, "OWNER", created.isoformat()))
            if i % 5 == 0:  # one in five shared with a colleague
                owners_members.append(
                    (i, 1 + (owner + 7) % USERS, rng.choice(["USER", "GUEST"]), created.isoformat())
                )
            links.append((i, 1 + (owner - 1) // 2 % EXPERIMENTS))
        _copy(
            cur,
            "instances",
            [
                "id",
                "uid",
                "name",
                "comments",
                "owner_id",
                "plan_id",
                "cloud_id",
                "cloud_server_id",
                "state",
                "screen_width",
                "screen_height",
                "keyboard_layout",
                "secret",
                "provider_state",
                "created_at",
                "terminates_at",
                "last_seen_at",
                "state_changed_at",
                "deleted_at",
            ],
            instances,
        )
        _copy(cur, "instance_members", ["instance_id", "user_id", "role", "created_at"], owners_members)
        _copy(cur, "instance_experiments", ["instance_id", "experiment_id"], links)
        for table in ("users", "instruments", "proposals", "experiments", "instances", "instance_members"):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
            )
        pg.commit()
        cur.execute("ANALYZE")
    seeded = time.perf_counter() - started

    with database.unit_of_work() as s:
        admin = User(
            username="benchadmin", full_name="Bench Admin", instance_quota=-1, active=True, created_at=now
        )
        admin.grants.append(RoleGrant(role=Role.ADMIN, granted_at=now))
        s.add(admin)
        s.flush()
        user = s.get(User, 1234)
        assert user is not None
        _, admin_token = create_api_token(actor_for(admin, now), s, system_clock, name="bench")
        _, user_token = create_api_token(actor_for(user, now), s, system_clock, name="bench")
        home = s.execute(
            text(
                "SELECT count(*) FROM instance_members m JOIN instances i ON i.id = m.instance_id "
                "WHERE m.user_id = 1234 AND i.deleted_at IS NULL"
            )
        ).scalar_one()
    database.dispose()
    return {
        "admin_token": admin_token,
        "user_token": user_token,
        "seed_seconds": round(seeded, 1),
        "home_instances": home,
    }


# --- the server (bench mode: SQL statements counted per request) -----------------------------


def serve(url: str, port: int, ready: Any) -> None:
    import uvicorn
    from flask import g
    from sqlalchemy import event

    from visa.asgi import build_asgi
    from visa.settings import Settings
    from visa.web.app import create_app

    settings = Settings(
        database_url=url,
        secret_key="bench-secret-key-bench-secret-key",
        data_dir=Path("/tmp"),
        scheduler={"enabled_in_web": False},
    )
    flask_app = create_app(settings)
    engine = flask_app.extensions["visa"].database.engine
    counter = threading.local()

    @event.listens_for(engine, "before_cursor_execute")
    def _count(*_args: Any) -> None:
        counter.n = getattr(counter, "n", 0) + 1

    @flask_app.before_request
    def _reset() -> None:
        counter.n = 0
        g.bench = True

    @flask_app.after_request
    def _header(response):  # noqa: ANN001, ANN202
        response.headers["X-Query-Count"] = str(getattr(counter, "n", 0))
        return response

    logging_off = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
    ready.set()
    uvicorn.run(
        build_asgi(flask_app, background=False),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        log_config=logging_off,
    )


# --- the load generator (a separate process) -------------------------------------------------


async def _load(url: str, token: str, seconds: float, concurrency: int) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    queries: set[int] = set()
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=30
    ) as client:

        async def one() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                r = await client.get(url)
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors += 1
                queries.add(int(r.headers.get("X-Query-Count", "-1")))

        for _ in range(3):  # warm up: connections, caches, the first plans
            await client.get(url)
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
        "queries_per_request": sorted(queries),
    }


def _load_process(url: str, token: str, seconds: float, concurrency: int, out: Any) -> None:
    out.put(asyncio.run(_load(url, token, seconds, concurrency)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="load per endpoint (default 10)")
    parser.add_argument("--concurrency", default="1,8",
                        help="concurrent connections, one run per value (default 1,8: alone, then under load)")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args(argv)

    name = f"visa_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    ctx = multiprocessing.get_context("spawn")
    server = None
    try:
        info = seed(url)
        print(
            f"seeded {USERS:,} users, {INSTANCES:,} instances in {info['seed_seconds']} s (database {name})",
            flush=True,
        )
        port = _free_port()
        ready = ctx.Event()
        server = ctx.Process(target=serve, args=(url, port, ready), daemon=True)
        server.start()
        ready.wait(60)
        base = f"http://127.0.0.1:{port}"
        import httpx

        for _ in range(100):
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        cases = [
            (
                f"GET /api/instances (a user with {info['home_instances']} instances)",
                "/api/instances",
                info["user_token"],
            ),
            ("GET /api/admin/instances?per_page=50", "/api/admin/instances?per_page=50", info["admin_token"]),
            (
                "GET /api/admin/instances?per_page=50&state=STOPPED&sort=-terminates_at",
                "/api/admin/instances?per_page=50&state=STOPPED&sort=-terminates_at",
                info["admin_token"],
            ),
        ]
        results: dict[str, dict[int, Any]] = {}
        levels = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
        for label, path, token in cases:
            print(label, flush=True)
            for concurrency in levels:
                out = ctx.Queue()
                loader = ctx.Process(target=_load_process, args=(base + path, token, args.seconds, concurrency, out))
                loader.start()
                result = out.get(timeout=args.seconds + 120)
                loader.join(30)
                results.setdefault(label, {})[concurrency] = result
                print(f"    {concurrency:>3} connection(s): p50 {result['p50_ms']} ms · p99 {result['p99_ms']} ms · "
                      f"{result['rps']} req/s · {result['requests']} requests, {result['errors']} errors · "
                      f"SQL statements per request: {result['queries_per_request']}", flush=True)
        report = json.dumps({"seconds": args.seconds, **info, "results": results}, default=str, indent=1)
        print(report.replace(info["admin_token"], "…").replace(info["user_token"], "…"))
    finally:
        if server is not None:
            server.terminate()
            server.join(10)
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
