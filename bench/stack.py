"""What the event and follower benchmarks share: a PostgreSQL database of their own, a small
world (users with instances on the local cloud, signed session cookies), real visa processes
(``visa gateway``, ``visa scheduler``) started with the same settings, and the database's
transaction counter (``pg_stat_database``: commits + rollbacks, every query of visa's runs in one).

PostgreSQL: ``VISA_BENCH_PG_URL`` (default the local server, trust auth).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.processes import free_port

PG_URL = os.environ.get("VISA_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BIN = Path(sys.executable).parent
SECRET_KEY = "bench-events-secret-key-0123456789abcdef"


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@contextlib.contextmanager
def temp_database(prefix: str = "visa_bench") -> Iterator[str]:
    """A migrated PostgreSQL database of its own, dropped at the end."""
    from visa.db import Database
    from visa.migrate import upgrade

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        database = Database(url)
        upgrade(database.engine)
        database.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def transactions(url: str) -> int:
    """Commits + rollbacks of the database so far (every visa query runs in a transaction)."""
    name = make_url(url).database
    engine = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :n"), {"n": name}).scalar())
    finally:
        engine.dispose()


@dataclass
class World:
    url: str
    cookies: list[str]  # one signed session cookie per user
    instances: dict[int, list[int]]  # user index -> instance ids
    cloud_id: int = 0
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="visa-bench-")))


def make_world(url: str, users: int, per_user: int = 2) -> World:
    """Users with ``per_user`` ACTIVE instances each on the local cloud, and their cookies."""
    import visa.models  # noqa: F401  (every model mapped)
    from tests.factories import make_cloud, make_flavour, make_image, make_plan, make_user
    from visa.auth.sessions import open_login_session, session_epoch
    from visa.clock import system_clock
    from visa.db import Database
    from visa.instances.models import Instance, InstanceMember, InstanceState, MemberRole
    from visa.settings import Settings
    from visa.web.app import create_app

    root = Path(tempfile.mkdtemp(prefix="visa-bench-"))
    database = Database(url)
    now = system_clock.now()
    sessions: list[tuple[int, str, str]] = []
    instances: dict[int, list[int]] = {}
    with database.unit_of_work() as s:
        cloud = make_cloud(s, system_clock)
        cloud.config = {"root_dir": str(root / "instances")}
        plan = make_plan(s, make_image(s), make_flavour(s, "small"))
        for n in range(users):
            user = make_user(s, system_clock, f"bench{n:05d}")
            ids = []
            for k in range(per_user):
                inst = Instance(uid=f"b{n:05d}{k:06d}", name=f"m{k}", owner=user, plan=plan, cloud=cloud,
                                state=InstanceState.ACTIVE, secret="s" * 24, created_at=now,
                                terminates_at=now + timedelta(days=14))
                inst.members = [InstanceMember(user=user, role=MemberRole.OWNER, created_at=now)]
                s.add(inst)
                s.flush()
                ids.append(inst.id)
            instances[n] = ids
            _row, sid = open_login_session(s, user, now, method="local")
            sessions.append((user.id, session_epoch(user), sid))
        cloud_id = cloud.id
    database.dispose()
    app = create_app(Settings(data_dir=root / "data", database_url=url, secret_key=SECRET_KEY))
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    cookies = [serializer.dumps({"user_id": u, "epoch": e, "sid": sid}) for u, e, sid in sessions]
    app.extensions["visa"].database.dispose()
    return World(url, cookies, instances, cloud_id, root)


def env_for(world: World, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("VISA_") and k != "PROMETHEUS_MULTIPROC_DIR"},
        "VISA_DATABASE_URL": world.url, "VISA_SECRET_KEY": SECRET_KEY, "VISA_DATA_DIR": str(world.root / "data"),
        "VISA_GATEWAY__EMBEDDED": "false", "VISA_SCHEDULER__ENABLED_IN_WEB": "false", "PYTHONUNBUFFERED": "1",
        **extra,
    }  # fmt: skip


class Procs:
    def __init__(self, root: Path) -> None:
        self.root, self.procs = root, []

    def start(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.root / f"proc-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=raise_fd_limit)
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def start_gateway(procs: Procs, world: World, **extra: str) -> int:
    port = free_port()
    proc = procs.start([str(BIN / "visa"), "gateway", "--host", "127.0.0.1", "--port", str(port)],
                       env_for(world, **extra))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the gateway exited: {(procs.root / 'proc-0.log').read_text()[-2000:]}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2, trust_env=False).status_code == 200:
                return port
        time.sleep(0.2)
    raise TimeoutError("the gateway did not start")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]
