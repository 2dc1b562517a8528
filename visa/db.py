"""Database plumbing: the declarative base, engines, sessions and the one transaction boundary.

Services flush and never commit. ``unit_of_work`` (used by requests, jobs and the CLI)
commits once at the end, or rolls back everything on error, then runs the actions
queued with ``after_commit`` (cloud calls, emails) only once the data is safe.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


POOL_OPTIONS = ("pool_size", "max_overflow", "pool_timeout", "pool_recycle")


def _private_sqlite_file(url: str) -> None:
    """Create a SQLite database file 0600 before SQLite does (it would follow the umask, 0644):
    its journal and WAL files take the database file's mode."""
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except (FileExistsError, FileNotFoundError):
        return  # there already, or its directory is missing (SQLite will say so)
    os.close(fd)


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        for name in POOL_OPTIONS:  # SQLite's pools take none of them: connections are files
            kwargs.pop(name, None)
        _private_sqlite_file(url)
        kwargs.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    engine = create_engine(url, **kwargs)
    _ping_after_idle(engine)
    return engine


# A pooled connection is pinged before use only if it sat idle this long: one used a moment
# ago is alive, and a ping per request (pool_pre_ping) is one more round trip on every one.
# A connection that died meanwhile fails its request, and SQLAlchemy then drops the pool's
# connections of that generation (a disconnect error invalidates them all).
PING_AFTER_IDLE_SECONDS = 10.0


def _ping_after_idle(engine: Engine) -> None:
    from sqlalchemy import exc

    @event.listens_for(engine, "checkin")
    def _idle_since(_dbapi_conn: Any, record: Any) -> None:
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("checked_in")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return  # new, or used a moment ago
        try:
            dbapi_conn.execute("SELECT 1")
            dbapi_conn.rollback()
        except Exception as error:
            raise exc.DisconnectionError() from error  # the pool opens a fresh one and retries


class Database:
    """An engine and its session factory."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        # The entry points import visa.models (every mapped class known before the first query):
        # the ground layer never imports the features.
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """One transaction: commit at the end, roll back on error, then run after-commit actions."""
        session = self.sessionmaker()
        try:
            yield session
            session.commit()
        except BaseException:
            end_unit_of_work(session, committed=False)
            raise
        end_unit_of_work(session, committed=True)

    def dispose(self) -> None:
        self.engine.dispose()


def end_unit_of_work(session: Session, *, committed: bool) -> None:
    """Close a transaction's session: roll back unless committed, then run its after-commit
    actions only if it was. The one ending of a unit of work (``unit_of_work``, the request hook)."""
    try:
        if not committed:
            session.rollback()
    finally:
        actions = session.info.pop("after_commit", [])
        session.close()
    if committed:
        for action in actions:
            action()


def after_commit(session: Session, action: Callable[[], None]) -> None:
    """Queue work (a cloud call, an email) to run only once the transaction is committed."""
    session.info.setdefault("after_commit", []).append(action)
