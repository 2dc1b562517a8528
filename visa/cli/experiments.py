"""``visa experiments``: experiments from the facility's user office; ``visa instruments``: who supports them."""

from __future__ import annotations

from pathlib import Path

import click

from visa.actor import SYSTEM
from visa.cli.common import emit, json_option, load_settings, open_database, progress
from visa.clock import system_clock


@click.group()
def experiments() -> None:
    """Experiments from the facility's user office."""


@experiments.command("import")
@click.argument("file", type=click.Path(path_type=Path), required=False)
@click.option("--dry-run", is_flag=True, help="Print what would change, change nothing")
@json_option
def experiments_import(file: Path | None, dry_run: bool, as_json: bool) -> None:
    """Upsert instruments and their scientists, proposals, experiments and members from a JSON or CSV
    FILE, or, without one, from the extractor of the setting experiments.import_source. All or nothing."""
    from visa.experiments.importer import parse_file, run_import
    from visa.experiments.source import fetch

    settings = load_settings()
    if file is not None:
        data = parse_file(file)
    elif settings.experiments.import_source is not None:
        data = fetch(settings.experiments.import_source)
    else:
        raise click.UsageError("give a FILE, or set experiments.import_source")
    database = open_database()
    with progress("importing experiments", quiet=as_json) as advance:
        result = run_import(SYSTEM, database, system_clock, data, settings, dry_run=dry_run, progress=advance)
    if as_json:
        emit({"dry_run": dry_run, **result.as_dict()}, True, str)
        return
    if dry_run:
        for line in result.changes():
            click.echo(f"would change: {line}")
        click.echo(f"dry run, nothing changed: {result}")
        return
    click.echo(str(result))


@click.group()
def instruments() -> None:
    """Instruments and their scientists (who support their users' machines)."""


@instruments.group("scientists")
def scientists() -> None:
    """The scientists of an instrument: on /support they see its users' machines."""


@scientists.command("add")
@click.argument("instrument")
@click.argument("username")
def scientists_add(instrument: str, username: str) -> None:
    """Make USERNAME a scientist of INSTRUMENT (granting INSTRUMENT_SCIENTIST)."""
    from visa.experiments.service import add_scientist

    with open_database().unit_of_work() as s:
        added = add_scientist(SYSTEM, s, system_clock, instrument, username)
    click.echo(f"{instrument}: {username} added" if added else f"{instrument}: {username} was a scientist already")


@scientists.command("remove")
@click.argument("instrument")
@click.argument("username")
def scientists_remove(instrument: str, username: str) -> None:
    """USERNAME no longer supports INSTRUMENT's users."""
    from visa.experiments.service import remove_scientist

    with open_database().unit_of_work() as s:
        removed = remove_scientist(SYSTEM, s, system_clock, instrument, username)
    click.echo(f"{instrument}: {username} removed" if removed else f"{instrument}: {username} was not a scientist")


@scientists.command("list")
@click.argument("instrument", required=False)
@json_option
def scientists_list(instrument: str | None, as_json: bool) -> None:
    """Each instrument (or INSTRUMENT alone) with its scientists."""
    from visa.experiments.service import get_instrument, list_instruments

    with open_database().unit_of_work() as s:
        if instrument is not None:
            get_instrument(s, instrument)  # an unknown name is an error, not an empty list
        rows = [{"instrument": i.name, "scientists": sorted(u.username for u in i.scientists)}
                for i in list_instruments(SYSTEM, s) if instrument in (None, i.name)]
    emit(rows, as_json, lambda r: f"{r['instrument']}: {', '.join(r['scientists']) or '-'}")
