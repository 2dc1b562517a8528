"""The migrations build the whole schema on both databases, with no drift from the models."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from visa.db import Base, Database
from visa.migrate import current_revision, head_revision, upgrade


def test_schema_at_head_with_every_table(db: Database) -> None:
    assert current_revision(db.engine) == head_revision()
    tables = set(inspect(db.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_no_drift_between_models_and_migrations(db: Database) -> None:
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def empty_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A database with nothing in it, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    from tests.conftest import PG_URL

    request.getfixturevalue("pg_database_url")  # skips or fails as the suite does without a server
    name = f"visa_old_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_upgrade_keeps_data_of_an_older_version(empty_url: str) -> None:
    """A database made by the first release, with data in it, upgrades to head intact."""
    database = Database(empty_url)
    upgrade(database.engine, "0001")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with database.engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id, username, full_name, instance_quota, active, created_at) "
                          "VALUES (1, 'alice', 'Alice', 2, :t, :now)"), {"t": True, "now": now})
        conn.execute(text("INSERT INTO clouds (id, name, kind, config, enabled, created_at) "
                          "VALUES (1, 'local', 'local', '{}', :t, :now)"), {"t": True, "now": now})
    upgrade(database.engine)
    assert current_revision(database.engine) == head_revision()
    with database.engine.connect() as conn:
        assert conn.execute(text("SELECT username FROM users")).scalar_one() == "alice"
    assert "claimed_at" in {c["name"] for c in inspect(database.engine).get_columns("instance_commands")}
    database.dispose()
