"""Shared fixtures: every database test runs on SQLite and on a real PostgreSQL.

PostgreSQL: ``VISA_TEST_PG_URL`` (default the local server, trust auth). Each test session
creates its own database, so concurrent runs on one machine do not meet; it is dropped at
the end. Where no server answers, PostgreSQL cases are skipped outside CI and fail in CI.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import sessionmaker

import visa.models  # noqa: F401  (every mapped class known before the first query)
from tests.factories import empty_database
from visa.clock import FrozenClock
from visa.db import Database, make_engine
from visa.migrate import upgrade

PG_URL = os.environ.get("VISA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# PostgreSQL is an external server: its half of every DB test belongs to the integration tier.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]


def _watched_phase():
    browser = sys.modules.get("tests.browser")
    if browser is not None:
        browser.begin_test()
    result = yield
    if browser is not None:
        browser.end_test()
    return result


# The comment the local cloud gives the unix accounts it makes for sessions (visa/clouds/local/provider.py).
SESSION_ACCOUNT_COMMENT = "visa session user "


def _session_accounts() -> set[str]:
    return {p.pw_name for p in pwd.getpwall() if p.pw_gecos.startswith(SESSION_ACCOUNT_COMMENT)}


@pytest.fixture(scope="module", autouse=True)
def _host_accounts_removed() -> Iterator[None]:
    """The sessions' unix accounts a module's tests made (the local cloud, as root, makes one per
    owner) go when the module's fixtures are done: the host is left as it was, and a later run,
    or a benchmark, never finds an account of this one's with another uid. Runs that make
    accounts are serialised on one machine; userdel leaves an account a live process uses."""
    if os.geteuid() != 0:
        yield
        return
    before = _session_accounts()
    yield
    for name in sorted(_session_accounts() - before):
        subprocess.run(["userdel", name], capture_output=True, check=False)
        with contextlib.suppress(KeyError):
            grp.getgrnam(name)
            subprocess.run(["groupdel", name], capture_output=True, check=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    """Pages that fixtures open (a login, a wizard) are held to the same rule as the test's."""
    return (yield from _watched_phase())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """A browser test fails on any console error or CSP violation its pages reported."""
    return (yield from _watched_phase())


def _pg_available() -> bool:
    try:
        eng = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    if not _pg_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI and does not answer at {PG_URL}")
        pytest.skip(f"no PostgreSQL at {PG_URL}")
    name = f"visa_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    from visa import pubsub

    pubsub.close_listener(url)  # it would try to reconnect to the dropped database until the end
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def _sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'visa.db'}"


@pytest.fixture(scope="session")
def _migrated(request: pytest.FixtureRequest) -> dict[str, Database]:
    return {}


def _database_for(backend: str, request: pytest.FixtureRequest, cache: dict[str, Database]) -> Database:
    if backend not in cache:
        url = (
            request.getfixturevalue("pg_database_url")
            if backend == "postgresql"
            else request.getfixturevalue("_sqlite_url")
        )
        database = Database(url)
        upgrade(database.engine)  # every run proves the migrations build the schema
        cache[backend] = database
    return cache[backend]


def _sqlite_savepoints(engine: Engine) -> None:
    """pysqlite opens a transaction only before a write, so a SAVEPOINT would open (and its
    RELEASE commit) the outermost one: let SQLAlchemy emit BEGIN itself (its documented recipe)."""

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")


@pytest.fixture(scope="session")
def _rollback_engines() -> dict[str, Engine]:
    return {}


@contextlib.contextmanager
def _rolled_back(database: Database, engines: dict[str, Engine]) -> Iterator[Database]:
    """``database`` with every session joined to one outer transaction, rolled back at the end.

    A session's commit releases a SAVEPOINT and its rollback returns to one, so the code under
    test commits, rolls back and runs its after-commit work as it does for real."""
    if database.url not in engines:
        engine = make_engine(database.url)
        if engine.dialect.name == "sqlite":
            _sqlite_savepoints(engine)
        engines[database.url] = engine
    connection = engines[database.url].connect()
    outer = connection.begin()
    bound = database.with_sessions(sessionmaker(
        bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
    ))
    try:
        yield bound
    finally:
        outer.rollback()
        connection.close()


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, _migrated: dict[str, Database], _rollback_engines: dict[str, Engine]
       ) -> Iterator[Database]:
    """A migrated database on each backend; what the test writes is rolled back at its end.

    Every session of the test shares one connection, so code that reaches the database from
    another thread, process or engine (a served app, the CLI, a subprocess) needs committed
    data: such a test asks for ``committed_db`` (itself or through a fixture), and ``db`` is then
    that database, its tables emptied after the test."""
    database = _database_for(request.param, request, _migrated)
    if "committed_db" in request.fixturenames:
        yield database
        empty_database(database)
        return
    with _rolled_back(database, _rollback_engines) as bound:
        yield bound


@pytest.fixture
def committed_db(db: Database) -> Database:
    """The test database with real commits, seen by every connection; emptied after the test."""
    return db


@pytest.fixture
def session(db: Database) -> Iterator:
    """A session whose work is committed at the end of the test, like a request."""
    with db.unit_of_work() as s:
        yield s


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def settings(tmp_path, db: Database):
    """Settings for an app on the test database, with its data directory in tmp_path."""
    from visa.settings import Settings

    return Settings(data_dir=tmp_path / "data", database_url=db.url, secret_key="test-secret-key")


@pytest.fixture
def app(settings, db: Database, clock: FrozenClock):
    from visa.web.app import create_app

    application = create_app(settings, database=db, clock=clock)
    application.config["TESTING"] = True
    return application


class ApiClient:
    """A Flask test client that logs in and sends the CSRF header like the pages do."""

    def __init__(self, app) -> None:
        self.client = app.test_client()
        self.csrf = ""

    def login(self, username: str, password: str):
        r = self.client.post("/api/login", json={"username": username, "password": password})
        if r.status_code == 200:
            self.csrf = r.get_json()["csrf_token"]
        return r

    def _send(self, method: str, url: str, **kw):
        headers = kw.pop("headers", {}) or {}
        if self.csrf:
            headers.setdefault("X-CSRF-Token", self.csrf)
        return self.client.open(url, method=method, headers=headers, **kw)

    def get(self, url: str, **kw):
        return self.client.get(url, **kw)

    def post(self, url: str, **kw):
        return self._send("POST", url, **kw)

    def put(self, url: str, **kw):
        return self._send("PUT", url, **kw)

    def patch(self, url: str, **kw):
        return self._send("PATCH", url, **kw)

    def delete(self, url: str, **kw):
        return self._send("DELETE", url, **kw)


@pytest.fixture
def api_client(app):
    """Make a new logged-out API client: ``api_client()``."""
    return lambda: ApiClient(app)


@pytest.fixture
def cli(committed_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``visa`` commands in this process on the test database (they open their own, so the data is
    committed); settings read afresh for each."""
    from click.testing import CliRunner

    from visa.cli import main
    from visa.settings import get_settings

    monkeypatch.setenv("VISA_DATABASE_URL", committed_db.url)
    monkeypatch.setenv("VISA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("VISA_CONFIG", raising=False)

    def run(*args: str):
        get_settings.cache_clear()
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
        assert "Traceback" not in result.output
        return result

    yield run
    get_settings.cache_clear()
