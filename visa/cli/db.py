"""``visa db``: the database schema."""

from __future__ import annotations

import click

from visa.cli.common import emit, json_option, open_database, progress


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema to the current version."""
    from visa.migrate import current_revision, pending_revisions, upgrade

    database = open_database(check=False)
    steps = pending_revisions(database.engine)
    with progress("migrating") as advance:
        for done, revision in enumerate(steps):  # one revision at a time: the bar moves
            advance(done, len(steps))
            upgrade(database.engine, revision)
    click.echo(f"database at revision {current_revision(database.engine)}")


@db.command("current")
@json_option
def db_current(as_json: bool) -> None:
    """Show the schema's revision and the one the code needs."""
    from visa.migrate import current_revision, head_revision

    database = open_database(check=False)
    emit({"current": current_revision(database.engine), "head": head_revision()}, as_json,
         lambda r: f"current: {r['current']}  head: {r['head']}")
