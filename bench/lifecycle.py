"""One lifecycle cycle over 100,000 instances: set-based statements vs. a per-row loop.

    python -m bench.lifecycle [--instances 100000] [--backends sqlite,postgresql] [--no-naive]

The population is a steady state: instances created over the last 14 days (60 for staff),
last used at any time within their inactivity limit, already warned when they crossed a
warning threshold before the last cycle. One cycle then has a few dozen decisions to take
among 100,000 rows, as in production every ``lifecycle_seconds``.

Both ways run in the same process on the same data, each in a transaction rolled back
afterwards, and must take the same decisions. The per-row loop is the reference's shape:
load every live instance, compute its deadlines in Python, act on the due ones.
PostgreSQL: ``VISA_TEST_PG_URL`` (default the local server); a scratch database is made and
dropped.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import visa.models  # noqa: F401
from visa.actor import SYSTEM
from visa.catalogue.models import Flavour, Image, Plan
from visa.catalogue.service import inactivity_limit_hours
from visa.clock import FrozenClock
from visa.clouds.models import Cloud
from visa.db import Database
from visa.instances import lifecycle
from visa.instances.models import CommandAction, Instance, InstanceState
from visa.instances.service import request_action
from visa.mail.outbox import enqueue
from visa.migrate import upgrade
from visa.settings import Settings
from visa.users.models import Role, RoleGrant, User

PG_URL = os.environ.get("VISA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CYCLE = timedelta(minutes=5)


# --- the population --------------------------------------------------------------------------


def populate(db: Database, n: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    lt = Settings().lifetimes
    users = max(1, n // 5)
    with db.unit_of_work() as s:
        cloud = Cloud(name="local", kind="local", config={}, enabled=True, created_at=NOW)
        image = Image(
            name="desktop", environment="Desktop", version="1", cloud_image_ref="d", visible=True, options={}
        )
        flavour = Flavour(name="m", cores=4, memory_mb=8192, cloud_flavour_ref="m", visible=True)
        s.add_all([cloud, image, flavour])
        s.flush()
        plan = Plan(image_id=image.id, flavour_id=flavour.id, preset=True, enabled=True)
        s.add(plan)
        s.flush()
        ids = {"cloud": cloud.id, "plan": plan.id}
    staff = set(rnd.sample(range(1, users + 1), users // 10))
    with db.engine.begin() as conn:
        conn.execute(
            insert(User),
            [
                {
                    "id": i,
                    "username": f"u{i}",
                    "full_name": f"User {i}",
                    "email": f"u{i}@example.org",
                    "instance_quota": 10,
                    "active": True,
                    "created_at": NOW - timedelta(days=400),
                }
                for i in range(1, users + 1)
            ],
        )
        conn.execute(
            insert(RoleGrant),
            [
                {"user_id": i, "role": Role.STAFF, "granted_at": NOW - timedelta(days=400)}
                for i in sorted(staff)
            ],
        )
        if db.engine.dialect.name == "postgresql":
            conn.execute(text("SELECT setval(pg_get_serial_sequence('users', 'id'), :n)"), {"n": users})
        rows = []
        for k in range(n):
            owner = rnd.randint(1, users)
            is_staff = owner in staff
            life = timedelta(hours=lt.staff_max_hours if is_staff else lt.user_max_hours)
            limit = timedelta(hours=lt.staff_inactivity_hours if is_staff else lt.user_inactivity_hours)
            created = NOW - timedelta(seconds=rnd.uniform(0, (life + CYCLE).total_seconds()))
            terminates = created + life
            last = max(created, NOW - timedelta(seconds=rnd.uniform(0, (limit + CYCLE).total_seconds())))
            shape = rnd.random()
            if shape < 0.6:  # at the desktop
                interaction, seen, compute = last, last, None
            elif shape < 0.85:  # computing, nobody looking
                interaction = seen = max(created, last - timedelta(days=2))
                compute = last
            else:  # a tab left open: counts 6 h past the last input
                interaction = max(created, last - timedelta(hours=lt.untouched_tab_hours))
                seen, compute = NOW, None
                last = min(seen, interaction + timedelta(hours=lt.untouched_tab_hours))
            warned_inactive = last + limit - timedelta(hours=lt.inactivity_warning_hours)
            warned_life = terminates - timedelta(hours=lt.lifetime_warning_hours)
            rows.append(
                {
                    "uid": uuid.UUID(int=rnd.getrandbits(128)).hex[:12],
                    "name": f"machine {k}",
                    "comments": "",
                    "owner_id": owner,
                    "plan_id": ids["plan"],
                    "cloud_id": ids["cloud"],
                    "cloud_server_id": f"srv-{k}",
                    "state": InstanceState.ACTIVE,
                    "secret": "x" * 24,
                    "provider_state": {},
                    "screen_width": 1280,
                    "screen_height": 800,
                    "keyboard_layout": "en-us",
                    "created_at": created,
                    "state_changed_at": created,
                    "terminates_at": terminates,
                    "last_seen_at": seen,
                    "last_interaction_at": interaction,
                    "last_compute_at": compute,
                    # Warned by an earlier cycle when the threshold was crossed before this one.
                    "inactivity_warned_at": warned_inactive if warned_inactive <= NOW - CYCLE else None,
                    "lifetime_warned_at": warned_life if warned_life <= NOW - CYCLE else None,
                }
            )
            if len(rows) == 10_000:
                conn.execute(insert(Instance), rows)
                rows = []
        if rows:
            conn.execute(insert(Instance), rows)
    with db.engine.begin() as conn:
        conn.execute(text("ANALYZE"))


# --- the reference's shape: a loop over every row ---------------------------------------------


def naive_cycle(session: Session, clock: FrozenClock, settings: Settings) -> lifecycle.CycleResult:
    lt = settings.lifetimes
    now = clock.now()
    result = lifecycle.CycleResult()
    notice_i = timedelta(hours=lt.inactivity_warning_hours)
    notice_l = timedelta(hours=lt.lifetime_warning_hours)
    for inst in session.scalars(
        select(Instance).where(Instance.deleted_at.is_(None)).order_by(Instance.id)
    ).unique():
        if inst.state in (InstanceState.DELETING, InstanceState.DELETED):
            continue
        limit = timedelta(hours=inactivity_limit_hours(inst.owner.roles_at(now), lt))
        idle_deadline = lifecycle.last_activity(inst, lt) + limit
        if inst.inactivity_warned_at is not None and idle_deadline > now + notice_i:
            inst.inactivity_warned_at = None
            result.cancelled += 1
        if (
            inst.terminates_at <= now
            and inst.lifetime_warned_at is not None
            and inst.lifetime_warned_at < now
        ):
            request_action(SYSTEM, session, clock, inst, CommandAction.DELETE)
            result.deleted[inst.id] = "lifetime"
            enqueue(session, clock, settings, "instance_deleted", inst.id, "lifetime", wait=True)
            continue
        if (
            inst.inactivity_warned_at is not None
            and inst.inactivity_warned_at <= now - notice_i
            and idle_deadline <= now
        ):
            request_action(SYSTEM, session, clock, inst, CommandAction.DELETE)
            result.deleted[inst.id] = "inactivity"
            enqueue(session, clock, settings, "instance_deleted", inst.id, "inactivity", wait=True)
            continue
        if inst.lifetime_warned_at is None and inst.terminates_at <= now + notice_l:
            inst.lifetime_warned_at = now
            result.lifetime_warned.append(inst.id)
            enqueue(session, clock, settings, "lifetime_warning", inst.id, now.isoformat(), wait=True)
        if inst.inactivity_warned_at is None and idle_deadline <= now + notice_i:
            inst.inactivity_warned_at = now
            result.inactivity_warned.append(inst.id)
            enqueue(session, clock, settings, "inactivity_warning", inst.id, now.isoformat(), wait=True)
    session.flush()
    return result


def timed(db: Database, settings: Settings, fn) -> tuple[float, lifecycle.CycleResult]:
    clock = FrozenClock(NOW)
    with db.sessionmaker() as s:
        started = time.perf_counter()
        result = fn(s, clock, settings)
        s.flush()
        elapsed = time.perf_counter() - started
        s.rollback()
    return elapsed, result


def set_based(s: Session, clock: FrozenClock, settings: Settings) -> lifecycle.CycleResult:
    return lifecycle.cycle(SYSTEM, s, clock, settings)


def decisions(r: lifecycle.CycleResult) -> tuple:
    return (r.cancelled, sorted(r.inactivity_warned), sorted(r.lifetime_warned), sorted(r.deleted.items()))


# --- backends ----------------------------------------------------------------------------------


def run_backend(name: str, n: int, naive: bool, repeats: int) -> dict[str, object]:
    tmp = tempfile.TemporaryDirectory(prefix="visa-bench-")
    pg_admin = None
    if name == "sqlite":
        url = f"sqlite:///{Path(tmp.name) / 'visa.db'}"
    else:
        db_name = f"visa_bench_{uuid.uuid4().hex[:8]}"
        pg_admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with pg_admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{db_name}"'))
        url = make_url(PG_URL).set(database=db_name).render_as_string(hide_password=False)
    db = Database(url)
    try:
        upgrade(db.engine)
        t0 = time.perf_counter()
        populate(db, n)
        fill = time.perf_counter() - t0
        settings = Settings(
            data_dir=Path(tmp.name), database_url=url, secret_key="bench"
        )  # SMTP off: rows only
        times = []
        for _ in range(repeats):
            elapsed, fast = timed(db, settings, set_based)
            times.append(elapsed)
        out: dict[str, object] = {
            "backend": name,
            "instances": n,
            "fill_s": fill,
            "set_based_s": statistics.median(times),
            "set_based_min_s": min(times),
            "decisions": fast,
        }
        if naive:
            elapsed, slow = timed(db, settings, naive_cycle)
            out["naive_s"] = elapsed
            out["same"] = decisions(slow) == decisions(fast)
        return out
    finally:
        db.dispose()
        if pg_admin is not None:
            with pg_admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
            pg_admin.dispose()
        tmp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-naive", action="store_true")
    args = parser.parse_args()
    results = [
        run_backend(b, args.instances, not args.no_naive, args.repeats) for b in args.backends.split(",")
    ]
    print(f"\nlifecycle cycle over {args.instances:,} instances (median of {args.repeats} set-based runs)\n")
    print(f"{'backend':12} {'set-based':>12} {'per-row loop':>14} {'speed-up':>9}  {'same':>5}  decisions")
    for r in results:
        d: lifecycle.CycleResult = r["decisions"]  # type: ignore[assignment]
        fast: float = r["set_based_s"]  # type: ignore[assignment]
        naive: float | None = r.get("naive_s")  # type: ignore[assignment]
        slow = f"{naive:>12.2f} s" if naive is not None else f"{'-':>14}"
        ratio = f"{naive / fast:>8.0f}x" if naive is not None else f"{'-':>9}"
        print(f"{r['backend']:12} {fast:>10.3f} s {slow} {ratio}  {r.get('same', '-')!s:>5}  {d}")
    print(
        "\n(set-based: one statement per rule over indexed/narrow columns; per-row: load each live "
        "instance and its owner's roles, decide in Python)"
    )
    for r in results:
        print(
            f"{r['backend']}: filled in {r['fill_s']:.1f} s; set-based fastest {r['set_based_min_s']:.3f} s"
        )


if __name__ == "__main__":
    main()
