"""The database fixtures themselves: a rolled-back test leaves nothing behind, yet inside it a
commit is kept, a rollback undoes only its own work, and after-commit work runs (both databases)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.conftest import _rolled_back
from tests.factories import make_cloud
from visa.clock import FrozenClock
from visa.clouds.models import Cloud
from visa.db import Database, after_commit


def _clouds(database: Database) -> list[str]:
    with database.sessionmaker() as s:
        return list(s.scalars(select(Cloud.name).order_by(Cloud.name)))


def test_a_rolled_back_test_keeps_its_commits_until_it_ends(committed_db: Database, clock: FrozenClock) -> None:
    ran: list[str] = []
    with _rolled_back(committed_db, {}) as db:
        with db.unit_of_work() as s:
            make_cloud(s, clock, "kept")
            after_commit(s, lambda: ran.append("kept"))
        with pytest.raises(RuntimeError), db.unit_of_work() as s:
            make_cloud(s, clock, "undone")
            after_commit(s, lambda: ran.append("undone"))
            raise RuntimeError
        assert _clouds(db) == ["kept"] and ran == ["kept"]
        assert _clouds(committed_db) == []  # other connections never see it
    assert _clouds(committed_db) == []


def test_db_is_the_committed_database_when_a_test_asks_for_it(db: Database, committed_db: Database,
                                                              clock: FrozenClock) -> None:
    assert db is committed_db
    with db.unit_of_work() as s:
        make_cloud(s, clock, "seen")
    with committed_db.engine.connect() as conn:  # another connection
        assert conn.scalar(select(func.count()).select_from(Cloud)) == 1
