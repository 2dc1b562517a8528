"""Pages and REST API: requests per second per core and latency under concurrency, on a large
PostgreSQL (10,000 users and 100,000 instances), served two ways side by side in one run:

* ``asgi``: the embedded setup (``visa run``): uvicorn, the Flask app behind the a2wsgi bridge;
* ``wsgi``: the web role of a multi-process deployment (``visa web``): gunicorn's gthread
  worker, the Flask app as plain WSGI (the gateway serves the long-lived connections apart).

    python -m bench.api_latency                      # seed, serve both ways, load, report, drop
    python -m bench.api_latency --seconds 20 --concurrency 1,16 --modes wsgi
    python -m bench.api_latency --scale 0.1          # 1,000 users, 10,000 instances: quick runs
    python -m bench.api_latency --keep               # keep the database (its name is printed)

Measured from a second process (a lean asyncio load generator with N keep-alive connections)
against the server on loopback: ``asgi`` one uvicorn process, ``wsgi`` as ``visa web`` runs by
default (2 gunicorn workers of 8 threads; ``--workers 1`` for one process). Both settle their
heap once loaded (visa.serving.settle_heap), as the served processes do:

* a user's home list, ``GET /api/instances`` (a user with 10 instances, 2 of them shared);
* an admin page of 50 instances, ``GET /api/admin/instances?per_page=50`` (newest first,
  100,000 to sort, counted up to 10,000: past that the page says "more than");
* an admin filtered page, ``GET /api/admin/instances?per_page=50&state=STOPPED&sort=-terminates_at``;
* the pages themselves, with a login session's cookie: the same user's home page ``GET /``
  and the admin's instances page ``GET /admin/instances`` (50 a page).

"per core" divides the requests by the CPU seconds the server process spent serving them
(user + system, from /proc): the load generator and PostgreSQL share the machine, so the
wall-clock rate alone would measure them too. PostgreSQL's own CPU is not counted.

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

from tests.processes import free_port

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


def seed(url: str, scale: float = 1.0) -> dict[str, Any]:
    """Schema, catalogue, users, experiments and instances; returns the tokens to use."""
    global USERS, INSTANCES, EXPERIMENTS
    USERS, INSTANCES, EXPERIMENTS = (max(1300, int(n * scale)) for n in (USERS, INSTANCES, EXPERIMENTS))
    import psycopg

    import visa.models  # noqa: F401
    from visa.actor import SYSTEM, actor_for
    from visa.auth.sessions import open_login_session, session_epoch
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
            ["id", "username", "full_name", "email", "idp_roles", "instance_quota", "active", "created_at",
             "extra_gids"],
            [
                (i, f"user{i:05d}", f"User {i}", f"user{i}@example.org", "", 10, "t", ts, "[]")
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
        # As autovacuum leaves a table in service: statistics, and the visibility map that lets
        # counts read an index alone (freshly copied rows are not yet known visible to all).
        pg.autocommit = True
        cur.execute("VACUUM ANALYZE")
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
        # The pages are read with a login session, as a browser does after logging in.
        sessions = {}
        for key, who in (("admin_session", admin), ("user_session", user)):
            _, sid = open_login_session(s, who, now, method="password")
            sessions[key] = {"user_id": who.id, "sid": sid, "epoch": session_epoch(who),
                             "csrf": secrets.token_urlsafe(32)}
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
        **sessions,
        "seed_seconds": round(seeded, 1),
        "home_instances": home,
    }


# --- the server (bench mode: SQL statements counted per request) -----------------------------


def _bench_app(url: str):
    from flask import g
    from sqlalchemy import event

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
    def _header(response):
        response.headers["X-Query-Count"] = str(getattr(counter, "n", 0))
        return response

    return flask_app


def serve(url: str, port: int, ready: Any, mode: str = "asgi", workers: int = 1, threads: int = 8) -> None:
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    if mode == "wsgi":  # visa web: gunicorn's gthread worker, as deploy/ runs it, one process
        from visa.serving import serve_web

        ready.set()
        serve_web(f"127.0.0.1:{port}", workers=workers, threads=threads, forwarded_allow_ips="127.0.0.1",
                  options={"loglevel": "warning", "keepalive": 30}, load=lambda: _bench_app(url))
        return
    import uvicorn

    from visa.asgi import build_asgi
    from visa.serving import settle_heap

    app = build_asgi(_bench_app(url), background=False)
    settle_heap()  # as create_asgi_app does
    logging_off = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
    ready.set()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        log_config=logging_off,
    )


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children still alive (gunicorn's worker)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


# --- the load generator (a separate process) -------------------------------------------------


class _Connection:
    """One keep-alive HTTP/1.1 connection, read and written by hand: the load generator shares
    the machine with the server, and an HTTP client library spends ~1 ms of CPU per request
    (as much as a small answer costs the server), which would be measured as the server's
    latency and taken from its cores."""

    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.host, self.port, self.request = host, port, request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self) -> tuple[int, dict[str, str]]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while size := int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readuntil(b"\r\n")
        else:
            await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.writer.close()
            self.writer = None
        return int(status_line.split()[1]), headers

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _load(url: str, credential: str, seconds: float, concurrency: int) -> dict[str, Any]:
    """``credential``: the header that says who asks (a bearer token, or a session cookie)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request = (f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n{credential}\r\n"
               f"Accept: */*\r\n\r\n").encode()
    latencies: list[float] = []
    queries: set[int] = set()
    errors = 0
    deadline = time.perf_counter() + seconds
    connections = [_Connection(parts.hostname or "127.0.0.1", parts.port or 80, request) for _ in range(concurrency)]

    async def one(conn: _Connection) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            status, headers = await conn.get()
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors += 1
            queries.add(int(headers.get("x-query-count", "-1")))

    for conn in connections:  # warm up: connections, caches, the first plans
        await conn.get()
    started = time.perf_counter()
    await asyncio.gather(*(one(c) for c in connections))
    elapsed = time.perf_counter() - started
    for conn in connections:
        conn.close()
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
        "queries_per_request": sorted(queries),
    }


def _load_process(url: str, credential: str, seconds: float, concurrency: int, out: Any) -> None:
    out.put(asyncio.run(_load(url, credential, seconds, concurrency)))


def _session_cookies(url: str, *sessions: dict[str, Any]) -> list[str]:
    """The ``Cookie`` headers of browsers logged in with these sessions (signed as the server signs)."""
    app = _bench_app(url)
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    return [f"Cookie: {app.config['SESSION_COOKIE_NAME']}={serializer.dumps(data)}" for data in sessions]


def _run_mode(ctx: Any, mode: str, url: str, cases: list[tuple[str, str, str]], levels: list[int],
              seconds: float, workers: int = 1, threads: int = 8) -> dict[str, dict[int, Any]]:
    import httpx

    port = free_port()
    ready = ctx.Event()
    server = ctx.Process(target=serve, args=(url, port, ready, mode, workers, threads), daemon=True)
    server.start()
    results: dict[str, dict[int, Any]] = {}
    try:
        ready.wait(60)
        base = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        for label, path, token in cases:
            print(f"[{mode}] {label}", flush=True)
            for concurrency in levels:
                out = ctx.Queue()
                loader = ctx.Process(target=_load_process, args=(base + path, token, seconds, concurrency, out))
                cpu0 = _cpu_seconds(server.pid)
                loader.start()
                result = out.get(timeout=seconds + 120)
                cpu = _cpu_seconds(server.pid) - cpu0
                loader.join(30)
                warmup = concurrency  # the loader's warm-up requests (one per connection) ran there too
                result["rps_per_core"] = round((result["requests"] + warmup) / cpu, 1) if cpu > 0 else None
                results.setdefault(label, {})[concurrency] = result
                print(f"    {concurrency:>3} connection(s): p50 {result['p50_ms']} ms · p99 {result['p99_ms']} ms · "
                      f"{result['rps']} req/s · {result['rps_per_core']} req/s per core · "
                      f"{result['requests']} requests, {result['errors']} errors · "
                      f"SQL statements per request: {result['queries_per_request']}", flush=True)
    finally:
        server.terminate()
        server.join(15)
        if server.is_alive():
            server.kill()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="load per endpoint (default 10)")
    parser.add_argument("--concurrency", default="1,8",
                        help="concurrent connections, one run per value (default 1,8: alone, then under load)")
    parser.add_argument("--modes", default="asgi,wsgi", help="servers to compare (default asgi,wsgi)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the data set (default 1: 10,000 users, 100,000 instances)")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--workers", type=int, default=2,
                        help="wsgi: gunicorn worker processes (default 2, as `visa web`)")
    parser.add_argument("--threads", type=int, default=8, help="wsgi: threads per worker (default 8, as `visa web`)")
    args = parser.parse_args(argv)

    name = f"visa_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    ctx = multiprocessing.get_context("spawn")
    try:
        info = seed(url, args.scale)
        print(
            f"seeded {USERS:,} users, {INSTANCES:,} instances in {info['seed_seconds']} s (database {name})",
            flush=True,
        )
        user_api = f"Authorization: Bearer {info['user_token']}"
        admin_api = f"Authorization: Bearer {info['admin_token']}"
        user_page, admin_page = _session_cookies(url, info.pop("user_session"), info.pop("admin_session"))
        cases = [
            (f"GET /api/instances (a user with {info['home_instances']} instances)", "/api/instances", user_api),
            ("GET /api/admin/instances?per_page=50", "/api/admin/instances?per_page=50", admin_api),
            (
                "GET /api/admin/instances?per_page=50&state=STOPPED&sort=-terminates_at",
                "/api/admin/instances?per_page=50&state=STOPPED&sort=-terminates_at",
                admin_api,
            ),
            ("page: GET / (the same user's home page)", "/", user_page),
            ("page: GET /admin/instances (50 a page)", "/admin/instances", admin_page),
        ]
        levels = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        results = {mode: _run_mode(ctx, mode, url, cases, levels, args.seconds, args.workers, args.threads)
                   for mode in modes}

        print(f"\n{USERS:,} users, {INSTANCES:,} instances on PostgreSQL, {args.seconds:g} s per figure")
        header = f"{'':<44}{'conn':>5}" + "".join(
            f"{m + ' p50/p99 ms':>22}{m + ' req/s (per core)':>24}" for m in modes)
        print(header)
        for label, _path, _token in cases:
            for concurrency in levels:
                row = f"{label[:43]:<44}{concurrency:>5}"
                for mode in modes:
                    r = results[mode][label][concurrency]
                    row += f"{str(r['p50_ms']) + ' / ' + str(r['p99_ms']):>22}"
                    row += f"{str(r['rps']) + ' (' + str(r['rps_per_core']) + ')':>24}"
                print(row)
        report = json.dumps({"seconds": args.seconds, "users": USERS, "instances": INSTANCES, **info,
                             "results": results}, default=str, indent=1)
        for secret in (info["admin_token"], info["user_token"], user_page, admin_page):
            report = report.replace(secret, "…")
        print(report)
    finally:
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
