"""What the command groups share: the settings and database, the domain errors' exit status, the
one ``--json`` emitter and the progress bar."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click
from pydantic import ValidationError

from visa.db import Database
from visa.errors import InvalidInput, VisaError
from visa.settings import Settings, get_settings


def load_settings() -> Settings:
    """visa's settings, read here once for the command line, the site's mount sources checked."""
    import os

    from visa.provisioning.sources import check_sources

    where = f" ({os.environ['VISA_CONFIG']})" if os.environ.get("VISA_CONFIG") else ""
    try:
        settings = get_settings()
        check_sources(settings.provisioning)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise click.ClickException(f"invalid configuration{where}:\n" + "\n".join(lines)) from None
    except InvalidInput as exc:
        raise click.ClickException(f"invalid configuration{where}:\n  {exc.message}") from None
    except ValueError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from None
    return settings


def open_database(check: bool = True) -> Database:
    settings = load_settings()
    settings.private_data_dir()
    database = Database(settings.sqlalchemy_url, **settings.engine_options())
    if check:
        from visa.migrate import SchemaOutOfDate, require_head

        try:
            require_head(database.engine)
        except SchemaOutOfDate as exc:
            raise click.ClickException(str(exc)) from None
    return database


class DomainError(click.ClickException):
    """A domain error (``visa.errors``) or invalid values: its message, exit status 1, no traceback.
    Exit status 2 is click's alone: a usage error (unknown option, missing argument)."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(self.message, err=True)


def _domain_error(exc: VisaError | ValidationError) -> DomainError:
    if isinstance(exc, VisaError):
        return DomainError(f"error: {exc.message}")
    return DomainError("\n".join(f"error: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()))


class VisaGroup(click.Group):
    """Every command's domain errors become a message and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (VisaError, ValidationError) as exc:
            raise _domain_error(exc) from None


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``: the command's result as one JSON document on stdout (see :func:`emit`)."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text")(fn)


def emit(data: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    """The one output path of the list and show commands: ``data`` (a dict, or a list of dicts:
    one per row) as JSON, or each row through ``text``."""
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    for row in data if isinstance(data, list) else [data]:
        click.echo(text(row))


@contextlib.contextmanager
def progress(label: str, quiet: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, updated with (done, total); shown only when stdout is a terminal
    (never in a pipe, a log or with --json)."""
    if quiet or not sys.stdout.isatty():
        yield lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def fields(row: dict[str, Any]) -> str:
    """A show command's text: one ``key: value`` line per field ('-' for none)."""
    def shown(v: Any) -> str:
        return "-" if v is None or v == [] else ",".join(map(str, v)) if isinstance(v, list) else str(v)

    return "\n".join(f"{k}: {shown(v)}" for k, v in row.items())


def emails_sent(timeout: float = 30) -> None:
    """Wait for the emails a command's commit sent in the background (``visa.mail.outbox``): the
    process would otherwise end before they leave (an unsent one waits for the scheduler's next
    cycle)."""
    import threading

    for thread in threading.enumerate():
        if thread.name == "visa-mail":
            thread.join(timeout=timeout)
