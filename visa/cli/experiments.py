"""``visa experiments``: experiments from the facility's user office."""

from __future__ import annotations

from pathlib import Path

import click

from visa.actor import SYSTEM
from visa.cli.common import load_settings, open_database, progress
from visa.clock import system_clock


@click.group()
def experiments() -> None:
    """Experiments from the facility's user office."""


@experiments.command("import")
@click.argument("file", type=click.Path(path_type=Path))
def experiments_import(file: Path) -> None:
    """Upsert instruments, proposals, experiments and members from a JSON or CSV file."""
    from visa.experiments.importer import import_experiments, parse_file
    from visa.users.service import reserved_usernames

    specs = parse_file(file)
    database = open_database()
    with progress("importing experiments") as advance, database.unit_of_work() as s:
        result = import_experiments(SYSTEM, s, system_clock, specs, default_quota=load_settings().default_quota,
                                    limits=load_settings().posix, origin=str(file), progress=advance,
                                    reserved=reserved_usernames(load_settings().provisioning.probe_username))
    click.echo(str(result))
