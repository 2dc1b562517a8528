"""The database pool comes from the settings: size, overflow, timeout, recycle."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import TimeoutError as PoolTimeout

from visa.db import Database
from visa.settings import Settings


def test_pool_settings_reach_the_engine(db: Database) -> None:
    settings = Settings(
        database_url=db.url, secret_key="x",
        database_pool={"size": 2, "max_overflow": 1, "timeout_seconds": 0.5, "recycle_seconds": 600},
    )  # fmt: skip
    database = Database(settings.sqlalchemy_url, **settings.engine_options())
    try:
        if db.url.startswith("sqlite"):
            # SQLite's pool takes none of them: the engine opens as it always did.
            with database.engine.connect():
                pass
            return
        pool = database.engine.pool
        assert pool.size() == 2 and pool._max_overflow == 1 and pool._recycle == 600  # type: ignore[attr-defined]
        # size + max_overflow connections at most: the next caller waits timeout_seconds, then fails.
        held = [database.engine.connect() for _ in range(3)]
        try:
            with pytest.raises(PoolTimeout):
                database.engine.connect()
        finally:
            for conn in held:
                conn.close()
        with database.engine.connect():  # and a connection given back serves the next caller
            pass
    finally:
        database.dispose()


def test_bad_pool_settings_are_named() -> None:
    with pytest.raises(ValueError, match="database_pool.size"):
        Settings(secret_key="x", database_pool={"size": 0})
