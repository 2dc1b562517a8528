"""Schema management: upgrade to head, check the revision at start, detect drift."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.set_main_option("file_template", "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s")
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def pending_revisions(engine: Engine) -> list[str]:
    """The revisions an upgrade to head applies, oldest first."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    current = current_revision(engine)
    return [r.revision for r in reversed(list(script.iterate_revisions("heads", current)))]


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


class SchemaOutOfDate(RuntimeError):
    pass


def require_head(engine: Engine) -> None:
    """Refuse to start on a database that is not at the head revision, and say how to fix it."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"the database is at revision {current or 'none (empty)'}, the code needs {head}; "
            "run `visa db upgrade` first"
        )
