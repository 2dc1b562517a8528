"""``visa catalogue``: images, flavours and plans, from files."""

from __future__ import annotations

from pathlib import Path

import click

from visa.actor import SYSTEM
from visa.cli.common import open_database, progress
from visa.clock import system_clock


@click.group()
def catalogue() -> None:
    """Images, flavours and plans, from files."""


@catalogue.command("apply")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Show what would change and change nothing")
def catalogue_apply(paths: tuple[Path, ...], dry_run: bool) -> None:
    """Validate catalogue files (flavours/, images/) and apply them in one transaction."""
    from visa.catalogue.service import apply_files

    database = open_database()
    with progress("applying the catalogue") as advance:
        if dry_run:
            with database.sessionmaker() as s:
                diff = apply_files(SYSTEM, s, system_clock, list(paths), progress=advance)
                s.rollback()
        else:
            with database.unit_of_work() as s:
                diff = apply_files(SYSTEM, s, system_clock, list(paths), progress=advance)
    click.echo(str(diff))
    if dry_run:
        click.echo("(dry run: nothing applied)")
