"""Database plumbing: the declarative base, engines, sessions and the one transaction boundary.

Services flush and never commit. ``unit_of_work`` (used by requests, jobs and the CLI)
commits once at the end, or rolls back everything on error, then runs the actions
queued with ``after_commit`` (cloud calls, emails) only once the data is safe.

A :class:`Database` hooks its own sessions (never every ``Session`` of the process): at each
flush it asks the functions features declare with :func:`change_keys` what the flush changed
(``i<instance id>``, ``u<user id>``, and :data:`QUEUED` when a command was queued), sends them
on PostgreSQL with ``pg_notify`` inside the transaction (delivered at the commit, to every
process: visa.pubsub; a queued command on the workers' channel), and after the commit hands
them to the callbacks given to :meth:`Database.on_commit` (each visa.services.Services on it:
its event bus and its workers' wake signal; SQLite has no notifications, and this process
hears its own commits at once).
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
import weakref
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from visa import pubsub

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


# --- what a transaction changed --------------------------------------------------------------
# What a flush changed, as keys: features declare these functions (visa.instances.changes);
# the declaration list is fixed at import, what hears the keys is each Database's own.
ChangeKeys = Callable[[Session], set[str]]
CHANGE_KEYS: list[ChangeKeys] = []
_CHANGED = "visa_changed_keys"
QUEUED = "c"  # the key of a queued command: the workers claim it


def change_keys(fn: ChangeKeys) -> ChangeKeys:
    """Declare ``fn(session) -> keys``, called at every flush of every Database's sessions."""
    CHANGE_KEYS.append(fn)
    return fn


def _announce(session: Session, keys: set[str]) -> None:
    if session.get_bind().dialect.name == "postgresql":
        connection = session.connection()
        for payload in pubsub.chunks(sorted(keys - {QUEUED})):
            pubsub.send(connection, pubsub.EVENTS, payload)
        if QUEUED in keys and QUEUED not in session.info.get(_CHANGED, ()):  # once per transaction
            pubsub.send(connection, pubsub.COMMANDS, QUEUED)
    # This process hears it at the commit too (and without a listener: SQLite, tests).
    session.info.setdefault(_CHANGED, set()).update(keys)


def publish_all(session: Session) -> None:
    """Tell every stream to read everything again at this transaction's commit (a bulk change
    the flush hook cannot see: a bulk delete)."""
    _announce(session, {"*"})


def _after_flush(session: Session, _context: object) -> None:
    keys: set[str] = set()
    for declared in CHANGE_KEYS:
        keys |= declared(session)
    if keys:
        _announce(session, keys)


def _after_rollback(session: Session) -> None:
    session.info.pop(_CHANGED, None)


class Database:
    """An engine, its session factory, and who hears what its committed transactions changed."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        # The entry points import visa.models (every mapped class known before the first query):
        # the ground layer never imports the features.
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self._committed: list[Callable[[str], None]] = []
        self.sessionmaker = self._hooked(sessionmaker(self.engine, expire_on_commit=False))

    def _hooked(self, maker: sessionmaker[Session]) -> sessionmaker[Session]:
        # SQLAlchemy keeps a sessionmaker's listeners as long as its class lives, and the class as
        # long as this database holds the sessionmaker: the hook holds the database weakly, or a
        # database (its engine, its pooled connections) would never be freed.
        database = weakref.ref(self)

        def after_commit(session: Session) -> None:
            found = database()
            if found is not None:
                found._after_commit(session)

        event.listen(maker, "after_flush", _after_flush)
        event.listen(maker, "after_commit", after_commit)
        event.listen(maker, "after_rollback", _after_rollback)
        return maker

    def _after_commit(self, session: Session) -> None:
        keys = session.info.pop(_CHANGED, None)
        if keys:
            payload = ",".join(sorted(keys))
            for callback in list(self._committed):
                callback(payload)

    def on_commit(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Have ``callback(keys)`` called after each commit that changed something; returns its removal."""
        self._committed.append(callback)

        def remove() -> None:
            if callback in self._committed:
                self._committed.remove(callback)

        return remove

    def with_sessions(self, maker: sessionmaker[Session]) -> Database:
        """This database with its sessions made by ``maker`` (tests bind them to one connection),
        hooked as its own, heard by callbacks of its own."""
        other = copy.copy(self)
        other._committed = []
        other.sessionmaker = other._hooked(maker)
        return other

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
