"""Two visa apps in one process, each on its own database, share nothing that runs: what one
database's commits change wakes only that app's event streams (its bus) and its command
workers (its wake signal, and on PostgreSQL its database's notification), and each app serves
the feeds it was given.

The two databases are fresh and migrated, so the same ids (user 1, instance 1) exist in both:
an event that crossed over would reach the other app's streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from flask import Flask
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from tests.conftest import BACKENDS, PG_URL, _pg_available
from tests.factories import actor, make_cloud, make_experiment, make_flavour, make_image, make_plan, make_user
from visa import pubsub
from visa.clock import FrozenClock
from visa.db import QUEUED, Database
from visa.instances import service
from visa.instances.models import CommandAction, CommandState, Instance, InstanceCommand, InstanceState
from visa.instances.schemas import CreateInstance
from visa.migrate import upgrade
from visa.services import Services
from visa.settings import Settings
from visa.web import events
from visa.web.app import create_app


@contextlib.contextmanager
def _database(backend: str, tmp_path: Path, name: str) -> Iterator[Database]:
    """A fresh migrated database of its own (not the shared test database)."""
    if backend == "sqlite":
        database = Database(f"sqlite:///{tmp_path / f'{name}.db'}")
        upgrade(database.engine)
        try:
            yield database
        finally:
            database.dispose()
        return
    if not _pg_available():
        pytest.skip(f"no PostgreSQL at {PG_URL}")
    db_name = f"visa_test_{name}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db_name}"'))
    database = Database(make_url(PG_URL).set(database=db_name).render_as_string(hide_password=False))
    try:
        upgrade(database.engine)
        yield database
    finally:
        pubsub.close_listener(database.url)
        database.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        admin.dispose()


def _app(database: Database, tmp_path: Path, clock: FrozenClock, name: str) -> Flask:
    settings = Settings(data_dir=tmp_path / name, database_url=database.url, secret_key=f"key-{name}")
    app = create_app(settings, database=database, clock=clock)
    with database.unit_of_work() as s:  # the same rows, the same ids, in both databases
        make_cloud(s, clock)
        alice = make_user(s, clock, "alice", password="alice-pw")
        exp = make_experiment(s, members=[alice], proposal="ev280", instrument="id21")
        plan = make_plan(s, make_image(s, "desktop"), make_flavour(s, "esrf.medium"), preset=True)
        service.create_instance(actor(alice, clock), s, clock, settings,
                                CreateInstance(name="tomo", plan_id=plan.id, experiment_ids=[exp.id]))
    return app


@pytest.fixture(params=BACKENDS)
def two_apps(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Flask, Flask]]:
    clock = FrozenClock()
    with _database(request.param, tmp_path, "a") as db_a, _database(request.param, tmp_path, "b") as db_b:
        apps = _app(db_a, tmp_path, clock, "a"), _app(db_b, tmp_path, clock, "b")
        try:
            yield apps
        finally:
            for app in apps:
                app.extensions["visa"].close()


def _services(app: Flask) -> Services:
    return app.extensions["visa"]  # type: ignore[no-any-return]


def _activate(app: Flask) -> None:
    with _services(app).database.unit_of_work() as s:
        s.scalar(select(Instance)).state = InstanceState.ACTIVE


def _stream(app: Flask) -> tuple[events.EventStream, events.UserStream, SimpleNamespace]:
    """alice's event stream on ``app``, as its endpoint opens it (the cookie a login gave)."""
    client = app.test_client()
    assert client.post("/api/login", json={"username": "alice", "password": "alice-pw"}).status_code == 200
    cookie = client.get_cookie("visa_session")
    assert cookie is not None

    async def is_disconnected() -> bool:
        return False

    request = SimpleNamespace(cookies={"visa_session": cookie.value}, is_disconnected=is_disconnected)
    stream = events.EventStream(app)
    ident = stream.identify(request)  # type: ignore[arg-type]
    assert ident is not None
    return stream, stream.stream(*ident), request


def test_two_apps_in_one_process_each_hear_only_their_own_database(two_apps, monkeypatch) -> None:
    app_a, app_b = two_apps
    monkeypatch.setattr(events, "POLL_SECONDS", 60.0)  # only a wake-up can bring an event in time
    monkeypatch.setattr(events, "HEARTBEAT_SECONDS", 60.0)
    a, b = _stream(app_a), _stream(app_b)
    assert a[1].user_id == b[1].user_id  # alice is user 1 in both: ids alone cannot tell them apart

    async def run() -> None:
        gen_a = a[0].events(a[1], a[2])  # type: ignore[arg-type]
        gen_b = b[0].events(b[1], b[2])  # type: ignore[arg-type]
        for gen in (gen_a, gen_b):
            assert (await gen.__anext__()).startswith(b"retry:")
            assert (await gen.__anext__()).startswith(b"event: ready")
        next_a, next_b = asyncio.ensure_future(gen_a.__anext__()), asyncio.ensure_future(gen_b.__anext__())
        await asyncio.sleep(0.2)  # both streams wait now
        assert _services(app_a).bus.open_streams() == 1 and _services(app_b).bus.open_streams() == 1
        sub_b = next(iter(_services(app_b).bus._subs))

        await asyncio.get_running_loop().run_in_executor(None, _activate, app_a)
        changed = await asyncio.wait_for(next_a, 10)
        assert changed.startswith(b"event: instance\n") and b'"state":"ACTIVE"' in changed
        await asyncio.sleep(1.0)  # on PostgreSQL, the notification went round the server too
        assert not next_b.done() and not sub_b.event.is_set() and not sub_b.session_changed

        # And the other way round: B's change reaches B's stream only.
        next_a = asyncio.ensure_future(gen_a.__anext__())
        await asyncio.sleep(0.2)
        sub_a = next(iter(_services(app_a).bus._subs))
        await asyncio.get_running_loop().run_in_executor(None, _activate, app_b)
        changed = await asyncio.wait_for(next_b, 10)
        assert changed.startswith(b"event: instance\n")
        await asyncio.sleep(1.0)
        assert not next_a.done() and not sub_a.event.is_set()
        next_a.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await next_a
        for gen in (gen_a, gen_b):
            await gen.aclose()

    asyncio.run(run())


def test_each_app_serves_the_feeds_it_was_given(two_apps) -> None:
    app_a, app_b = two_apps
    assert {"presence", "support"} <= set(app_a.extensions[events.FEEDS])
    del app_b.extensions[events.FEEDS]["support"]  # an app may serve fewer: the other one is untouched
    assert "support" in app_a.extensions[events.FEEDS]
    assert "support" not in _stream(app_b)[1].feeds_served


def test_a_command_queued_in_one_app_wakes_only_its_own_workers(two_apps) -> None:
    """A command row is only a row: its commit wakes the workers of its database, none other."""
    a, b = (_services(app) for app in two_apps)
    heard: dict[str, queue.Queue[str | None]] = {"a": queue.Queue(), "b": queue.Queue()}
    unsubscribe = []
    if pubsub.supported(a.database.url):  # the other processes' workers hear it from PostgreSQL
        for name, svc in (("a", a), ("b", b)):
            found = pubsub.listener(svc.database.url)
            assert found is not None
            unsubscribe.append(found.subscribe(pubsub.COMMANDS, heard[name].put))
            assert pubsub.wait_connected(found)
    try:
        a.commands_queued.clear()
        b.commands_queued.clear()
        with a.database.unit_of_work() as s:
            inst = s.scalar(select(Instance))
            s.add(InstanceCommand(instance_id=inst.id, actor_id=inst.owner_id, action=CommandAction.REBOOT,
                                  state=CommandState.PENDING, created_at=a.clock.now()))
            s.flush()
            assert not a.commands_queued.is_set()  # not before the commit: a worker would not see the row
        assert a.commands_queued.is_set() and not b.commands_queued.is_set()
        if unsubscribe:
            assert heard["a"].get(timeout=10) == QUEUED
            with pytest.raises(queue.Empty):
                heard["b"].get(timeout=1.0)
    finally:
        for stop in unsubscribe:
            stop()


def test_a_database_no_one_holds_is_freed_with_its_connections(tmp_path: Path) -> None:
    """Its session hooks hold it weakly: a command-line run opens one per command, and their
    pooled connections would pile up on the server otherwise."""
    import gc
    import weakref

    database = Database(f"sqlite:///{tmp_path / 'gone.db'}")
    services = Services(settings=Settings(data_dir=tmp_path, secret_key="k"), database=database)
    with database.unit_of_work() as s:
        s.execute(text("SELECT 1"))
    gone = weakref.ref(database)
    del database, services, s
    gc.collect()
    assert gone() is None
