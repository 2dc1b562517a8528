"""The ``visa`` command line. Every command calls the same services as the web, as the system actor."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from sqlalchemy import select

import visa.models  # noqa: F401  (every mapped class known before the first query)
from visa.actor import SYSTEM
from visa.clock import system_clock
from visa.db import Database
from visa.errors import VisaError
from visa.settings import Settings, get_settings


def _settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        import os

        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        where = f" ({os.environ['VISA_CONFIG']})" if os.environ.get("VISA_CONFIG") else ""
        raise click.ClickException(f"invalid configuration{where}:\n" + "\n".join(lines)) from None
    except ValueError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from None


def _database(check: bool = True) -> Database:
    settings = _settings()
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


@click.group(cls=VisaGroup)
@click.version_option(package_name="visa", prog_name="visa")
def main() -> None:
    """visa: remote data-analysis machines in the browser."""


# --- database -------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema to the current version."""
    from visa.migrate import current_revision, pending_revisions, upgrade

    database = _database(check=False)
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

    database = _database(check=False)
    emit({"current": current_revision(database.engine), "head": head_revision()}, as_json,
         lambda r: f"current: {r['current']}  head: {r['head']}")


# --- setup ----------------------------------------------------------------------------------


def local_cloud_config(settings: Settings) -> dict[str, Any]:
    """The local cloud binds experiment data from a directory of this machine where a VM mounts NFS."""
    facility = (settings.data_dir / "facility").resolve()
    return {
        "provisioning": {
            "mount_type": "bind",
            "raw_mount_template": f"{facility}/visitor/{{proposal}}/{{beamline}}",
            "processed_mount_template": f"{facility}/processed/{{proposal}}/{{beamline}}",
        }
    }


def ensure_local_cloud(database: Database) -> None:
    from visa.clouds.models import Cloud

    settings = _settings()
    if settings.default_cloud != "local":
        return
    with database.unit_of_work() as s:
        if s.scalar(select(Cloud).where(Cloud.name == "local")) is None:
            s.add(Cloud(name="local", kind="local", config=local_cloud_config(settings), enabled=True,
                        created_at=system_clock.now()))


@main.command()
def init() -> None:
    """Create the data directory and the database, and register the local cloud."""
    from visa.migrate import upgrade

    settings = _settings()
    database = _database(check=False)
    upgrade(database.engine)
    ensure_local_cloud(database)
    click.echo(f"visa initialised: data in {settings.data_dir.resolve()}, database {database.engine.url!r}")


@main.command()
@click.option("--port", default=None, type=int, help="Port (default from settings: 8080)")
@click.option("--no-serve", is_flag=True, help="Prepare the demo and exit")
def demo(port: int | None, no_serve: bool) -> None:
    """Set up a demonstration on this machine (catalogue, experiments, users, data) and serve it."""
    from visa.demo import prepare_demo

    ctx = click.get_current_context()
    ctx.invoke(init)
    for line in prepare_demo(_settings(), _database()):
        click.echo(line)
    if not no_serve:
        ctx.invoke(run, port=port)


@main.command()
@click.option("--host", default=None, help="Address to listen on (default from settings)")
@click.option("--port", default=None, type=int, help="Port (default from settings: 8080)")
@click.option("--workers", default=1, show_default=True, type=int)
def run(host: str | None, port: int | None, workers: int) -> None:
    """Serve visa: pages, REST API and the desktop gateway."""
    import uvicorn

    settings = _settings()
    _database()  # refuse to start on an old schema, with the command that fixes it
    from visa.checks import check_all

    problems = [f for f in check_all(settings) if f.level != "ok"]
    for finding in problems:
        click.echo(str(finding), err=True)
    if any(f.level == "error" for f in problems):
        raise click.ClickException("invalid configuration (see above; `visa check-config` checks it)")
    from visa.serving import UVICORN_OPTIONS

    if not settings.gateway.embedded:
        click.echo("gateway.embedded is off: /ws/ and instance hosts are served by `visa gateway`", err=True)
    uvicorn.run(
        "visa.asgi:create_asgi_app", factory=True, host=host or settings.host, port=port or settings.port,
        workers=workers, log_level="info", **UVICORN_OPTIONS,
    )


@main.command()
@click.option("--bind", default=None, help="host:port to listen on (default from settings: host, port)")
@click.option("--workers", default=2, show_default=True, type=int, help="Processes (about one per core)")
@click.option("--threads", default=8, show_default=True, type=int, help="Threads per process")
@click.option("--forwarded-allow-ips", default="127.0.0.1", show_default=True,
              help="Proxies whose X-Forwarded-* headers are trusted ('*': any, inside a container network)")
@click.option("--graceful-timeout", default=30, show_default=True, type=int,
              help="Seconds a stopping worker has to finish the requests it accepted")
def web(bind: str | None, workers: int, threads: int, forwarded_allow_ips: str, graceful_timeout: int) -> None:
    """Serve the pages and the REST API of a multi-process deployment: plain WSGI under gunicorn's
    threaded workers. Desktops, instance web proxies and event streams are `visa gateway`'s.
    SIGTERM drains, SIGHUP replaces the workers with no request lost."""
    settings = _settings()
    _database()
    try:
        from visa.serving import serve_web
    except ImportError:  # pragma: no cover - gunicorn is in the "deploy" extra
        raise click.ClickException("visa web needs gunicorn: pip install 'visa[deploy]'") from None
    if settings.gateway.embedded:
        click.echo("gateway.embedded is on, but visa web serves no desktop nor event stream: run "
                   "`visa gateway` and route /ws/, /api/events and instance hosts to it", err=True)
    from visa import logs

    logs.configure(settings.log_json)
    serve_web(bind or f"{settings.host}:{settings.port}", workers=workers, threads=threads,
              forwarded_allow_ips=forwarded_allow_ips, options={"graceful_timeout": graceful_timeout})


@main.command()
@click.option("--host", default=None, help="Address to listen on (default: gateway.host)")
@click.option("--port", default=None, type=int, help="Port (default: gateway.port, 8081)")
@click.option("--workers", default=1, show_default=True, type=int)
def gateway(host: str | None, port: int | None, workers: int) -> None:
    """Serve the desktop relay (/ws/) and the instances' web proxies (the user-content hosts)
    apart from the web, so that web deploys and restarts drop no open desktop."""
    import uvicorn

    from visa.serving import UVICORN_OPTIONS

    settings = _settings()
    _database()
    uvicorn.run(
        "visa.asgi:create_gateway_app", factory=True, host=host or settings.gateway.host,
        port=port or settings.gateway.port, workers=workers, log_level="info", **UVICORN_OPTIONS,
    )


@main.command()
@click.option("--no-worker", is_flag=True, help="Do not carry out instance commands in this process")
def scheduler(no_worker: bool) -> None:
    """Run the periodic jobs (state sync, activity, lifetimes, emails, clean-up) when this process
    holds the leader lease; any number may run, one leads at a time. /metrics and /health on
    scheduler.metrics_port."""
    from visa import logs
    from visa.scheduler.runner import Runner
    from visa.services import Services

    settings = _settings()
    logs.configure(settings.log_json)  # the web's format: JSON lines when log_json
    Runner(Services(settings=settings, database=_database()), worker=not no_worker).run_forever()


@main.command("check-config")
@click.option("--probe-clouds", is_flag=True, help="Also ask every enabled cloud for its limits (10 s timeout)")
@json_option
def check_config(probe_clouds: bool, as_json: bool) -> None:
    """Validate the configuration: settings, data directory, database schema, clouds. Exit
    status 1 when an error is found."""
    from visa.checks import check_all

    findings = check_all(_settings(), probe_clouds=probe_clouds)
    errors = sum(f.level == "error" for f in findings)
    summary = f"{errors} error(s), {sum(f.level == 'warning' for f in findings)} warning(s)"
    if as_json:
        emit({"findings": [dataclasses.asdict(f) for f in findings], "errors": errors}, True, str)
    else:
        emit([str(f) for f in findings] + [summary], False, str)
    if errors:
        sys.exit(1)

# --- catalogue ------------------------------------------------------------------------------


@main.group()
def catalogue() -> None:
    """Images, flavours and plans, from files."""


@catalogue.command("apply")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Show what would change and change nothing")
def catalogue_apply(paths: tuple[Path, ...], dry_run: bool) -> None:
    """Validate catalogue files (flavours/, images/) and apply them in one transaction."""
    from visa.catalogue.service import apply_files

    database = _database()
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


# --- experiments ----------------------------------------------------------------------------


@main.group()
def experiments() -> None:
    """Experiments from the facility's user office."""


@experiments.command("import")
@click.argument("file", type=click.Path(path_type=Path))
def experiments_import(file: Path) -> None:
    """Upsert instruments, proposals, experiments and members from a JSON or CSV file."""
    from visa.experiments.importer import import_experiments, parse_file
    from visa.users.service import reserved_usernames

    specs = parse_file(file)
    database = _database()
    with progress("importing experiments") as advance, database.unit_of_work() as s:
        result = import_experiments(SYSTEM, s, system_clock, specs, default_quota=_settings().default_quota,
                                    limits=_settings().posix, origin=str(file), progress=advance,
                                    reserved=reserved_usernames(_settings().provisioning.probe_username))
    click.echo(str(result))


# --- users ----------------------------------------------------------------------------------


@main.group()
def users() -> None:
    """Accounts, roles and quotas."""


@users.command("add")
@click.argument("username")
@click.option("--full-name", default="")
@click.option("--email", default=None)
@click.option("--password", default=None, help="For a local account (prompted if --prompt)")
@click.option("--prompt", is_flag=True, help="Ask for the password")
@click.option("--quota", type=int, default=None)
@click.option("--role", "roles", multiple=True, help="Grant a role (repeatable)")
def users_add(username: str, full_name: str, email: str | None, password: str | None, prompt: bool,
              quota: int | None, roles: tuple[str, ...]) -> None:
    from visa.users import service

    if prompt:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    parsed = [service.parse_role(r) for r in roles]
    database = _database()
    with database.unit_of_work() as s:
        user = service.create_user(
            SYSTEM, s, system_clock, username=username, full_name=full_name, email=email, password=password,
            quota=quota, default_quota=_settings().default_quota,
            reserved=service.reserved_usernames(_settings().provisioning.probe_username),
        )
        for role in parsed:
            service.grant_role(SYSTEM, s, system_clock, user, role)
    click.echo(f"user {username} added")


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO date or datetime", param_hint="--until") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@users.command("grant")
@click.argument("username")
@click.argument("role")
@click.option("--until", default=None, help="Expiry (ISO date or datetime); required for GUEST")
def users_grant(username: str, role: str, until: str | None) -> None:
    from visa.users import service

    with _database().unit_of_work() as s:
        user = service.get_user(s, username)
        service.grant_role(SYSTEM, s, system_clock, user, service.parse_role(role), expires_at=_when(until))
    click.echo(f"{username}: {role.upper()} granted" + (f" until {until}" if until else ""))


@users.command("revoke")
@click.argument("username")
@click.argument("role")
def users_revoke(username: str, role: str) -> None:
    from visa.users import service

    with _database().unit_of_work() as s:
        user = service.get_user(s, username)
        removed = service.revoke_role(SYSTEM, s, system_clock, user, service.parse_role(role))
    click.echo(f"{username}: {role.upper()} revoked" if removed else f"{username} did not have {role.upper()}")


@users.command("quota", context_settings={"ignore_unknown_options": True})  # so "-1" is a value
@click.argument("username")
@click.argument("quota", type=int)
def users_quota(username: str, quota: int) -> None:
    """Set the instance quota (-1 = unlimited)."""
    from visa.users import service

    with _database().unit_of_work() as s:
        service.set_quota(SYSTEM, s, system_clock, service.get_user(s, username), quota)
    click.echo(f"{username}: quota {quota}")


@users.command("passwd")
@click.argument("username")
def users_passwd(username: str) -> None:
    from visa.users import service

    password = click.prompt("new password", hide_input=True, confirmation_prompt=True)
    with _database().unit_of_work() as s:
        service.set_password(SYSTEM, s, system_clock, service.get_user(s, username), password)
    click.echo("password changed")


@users.command("logout")
@click.argument("username")
def users_logout(username: str) -> None:
    """End every login session of the user, in every browser (a stolen cookie stops working)."""
    from visa.users import service

    with _database().unit_of_work() as s:
        ended = service.revoke_sessions(SYSTEM, s, system_clock, service.get_user(s, username))
    click.echo(f"{username}: {ended} session(s) ended")


@users.command("deactivate")
@click.argument("username")
def users_deactivate(username: str) -> None:
    """Refuse the account's logins and tokens, and end its sessions."""
    from visa.users import service

    with _database().unit_of_work() as s:
        service.set_active(SYSTEM, s, system_clock, service.get_user(s, username), False)
    click.echo(f"{username}: deactivated")


@users.command("activate")
@click.argument("username")
def users_activate(username: str) -> None:
    from visa.users import service

    with _database().unit_of_work() as s:
        service.set_active(SYSTEM, s, system_clock, service.get_user(s, username), True)
    click.echo(f"{username}: active")


@users.command("link")
@click.argument("username")
@click.argument("subject")
@click.option("--issuer", help="Default: the configured identity provider's realm")
def users_link(username: str, subject: str, issuer: str | None) -> None:
    """Link an existing account to an identity (the provider's subject): logins through the
    provider are matched by issuer and subject, never by name."""
    from visa.users import service

    settings = _settings()
    if issuer is None:
        if not settings.oidc.server_url:
            raise click.ClickException("no identity provider configured: give --issuer")
        issuer = settings.oidc.issuer
    with _database().unit_of_work() as s:
        service.link_identity(SYSTEM, s, system_clock, service.get_user(s, username), issuer, subject)
    click.echo(f"{username}: linked to {subject} at {issuer}")


def _gid_list(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(g) for g in value.replace(",", " ").split())
    except ValueError:
        raise click.BadParameter(f"{value[:60]!r} is not a list of gids, e.g. 24001,24002",
                                 param_hint="--groups") from None


@users.command("set-posix")
@click.argument("username")
@click.option("--uid", "uid", type=int, default=None, help="uid on the facility's storage")
@click.option("--gid", "gid", type=int, default=None, help="Primary gid")
@click.option("--groups", default=None, help="Supplementary gids, comma separated ('' for none)")
@click.option("--home", default=None, help="Home path in the machines, e.g. /home/alice")
def users_set_posix(username: str, uid: int | None, gid: int | None, groups: str | None, home: str | None) -> None:
    """Set a user's unix identity (values not given stay as they are). Refused when the identity
    provider gives it, for a uid another account has, and below the system range (posix.min_uid)."""
    from visa.users import service

    settings = _settings()
    with _database().unit_of_work() as s:
        user = service.get_user(s, username)
        old = service.posix_of(user)
        gids = _gid_list(groups)
        new = service.Posix(
            uid if uid is not None else old.uid_number, gid if gid is not None else old.gid_number,
            gids if gids is not None else old.extra_gids, home if home is not None else old.home_path,
        )
        changed = service.set_posix(SYSTEM, s, system_clock, user, new, source="cli", limits=settings.posix)
    shown = f"uid={new.uid_number} gid={new.gid_number} groups={','.join(map(str, new.extra_gids)) or '-'} " \
            f"home={new.home_path or '-'}"
    click.echo(f"{username}: {shown}" + ("" if changed else " (unchanged)"))


@users.command("unix-account")
@click.argument("username")
@click.argument("account")
@click.option("--replace", is_flag=True, help="Change the account already recorded for the user")
def users_unix_account(username: str, account: str, replace: bool) -> None:
    """Record ACCOUNT, a unix account this host has, as the one USERNAME's local sessions run as:
    for an account made before visa recorded them, or the facility's own. visa never adopts an
    account it merely finds; an operator says so here."""
    from visa.clouds.local import host_account
    from visa.users import service

    name, uid = host_account(account)
    with _database().unit_of_work() as s:
        user = service.get_user(s, username)
        service.adopt_unix_account(SYSTEM, s, system_clock, user, name, uid, replace=replace)
    click.echo(f"{username}: local sessions run as {name} (uid {uid})")


def _fields(row: dict[str, Any]) -> str:
    """A show command's text: one ``key: value`` line per field ('-' for none)."""
    def shown(v: Any) -> str:
        return "-" if v is None or v == [] else ",".join(map(str, v)) if isinstance(v, list) else str(v)

    return "\n".join(f"{k}: {shown(v)}" for k, v in row.items())


def _user_row(u: Any, now: datetime) -> dict[str, Any]:
    return {"username": u.username, "full_name": u.full_name, "email": u.email, "quota": u.instance_quota,
            "uid": u.uid_number, "gid": u.gid_number, "roles": sorted(r.value for r in u.roles_at(now)),
            "active": u.active}


def _user_line(r: dict[str, Any]) -> str:
    uid = "-" if r["uid"] is None else r["uid"]
    return f"{r['username']:24} quota={r['quota']:<3} uid={uid!s:<8} roles={','.join(r['roles']) or '-'}"


@users.command("list")
@json_option
def users_list(as_json: bool) -> None:
    """Every account, with its quota, uid and roles."""
    from visa.users.models import User

    now = system_clock.now()
    with _database().sessionmaker() as s:
        rows = [_user_row(u, now) for u in s.scalars(select(User).order_by(User.username))]
    emit(rows, as_json, _user_line)


@users.command("show")
@click.argument("username")
@json_option
def users_show(username: str, as_json: bool) -> None:
    """One account: name, e-mail, quota, unix identity, roles, active or not."""
    from visa.users import service

    with _database().sessionmaker() as s:
        row = _user_row(service.get_user(s, username), system_clock.now())
    emit(row, as_json, _fields)


# --- clouds ---------------------------------------------------------------------------------


@main.group()
def clouds() -> None:
    """Clouds visa provisions on."""


@clouds.command("add")
@click.argument("name")
@click.option("--kind", required=True, help="local or openstack")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="JSON file of provider settings")
def clouds_add(name: str, kind: str, config_file: Path | None) -> None:
    """Register (or update) a cloud. Secrets may be given as {"env": "VAR"}."""
    from visa.clouds.service import register_cloud

    config: dict[str, Any] = {}
    if config_file:
        try:
            config = json.loads(config_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise click.ClickException(f"{config_file}: {exc}") from None
        if not isinstance(config, dict):
            raise click.ClickException(f"{config_file}: expected a JSON object")
    from visa.errors import InvalidInput

    try:
        with _database().unit_of_work() as s:
            register_cloud(SYSTEM, s, system_clock, name, kind, config, site=_settings().provisioning)
    except InvalidInput as exc:
        raise InvalidInput(f"{config_file or 'config'}: {exc.message}", field=exc.field) from None
    click.echo(f"cloud {name} ({kind}) registered")


@clouds.command("list")
@json_option
def clouds_list(as_json: bool) -> None:
    """Registered clouds and whether they take new instances (their settings are not shown: secrets)."""
    from visa.clouds.service import list_clouds

    with _database().sessionmaker() as s:
        rows = [{"name": c.name, "kind": c.kind, "enabled": c.enabled} for c in list_clouds(s)]
    emit(rows, as_json, lambda r: f"{r['name']:16} {r['kind']:10} {'enabled' if r['enabled'] else 'disabled'}")


def _set_cloud_enabled(name: str, enabled: bool) -> None:
    from visa.clouds.service import set_cloud_enabled

    with _database().unit_of_work() as s:
        set_cloud_enabled(SYSTEM, s, system_clock, name, enabled)
    click.echo(f"cloud {name} {'enabled' if enabled else 'disabled'}")


@clouds.command("enable")
@click.argument("name")
def clouds_enable(name: str) -> None:
    """Let a cloud take new instances again."""
    _set_cloud_enabled(name, True)


@clouds.command("disable")
@click.argument("name")
def clouds_disable(name: str) -> None:
    """Give a cloud no new instances (those it has keep running)."""
    _set_cloud_enabled(name, False)


# --- instances ------------------------------------------------------------------------------


@main.group()
def instances() -> None:
    """Instances (for operators)."""


def _instance_row(i: Any) -> dict[str, Any]:
    return {"uid": i.uid, "name": i.name, "state": i.state.value, "owner": i.owner.username,
            "image": i.plan.image.name, "flavour": i.plan.flavour.name,
            "cloud": i.cloud.name if i.cloud is not None else None, "created_at": i.created_at.isoformat(),
            "deleted_at": i.deleted_at.isoformat() if i.deleted_at else None}


def _instance_line(r: dict[str, Any]) -> str:
    return f"{r['uid']}  {r['state']:16} {r['owner']:16} {r['image']}/{r['flavour']}  {r['name']}"


@instances.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include deleted instances")
@json_option
def instances_list(show_all: bool, as_json: bool) -> None:
    """Instances, oldest first."""
    from visa.instances.models import Instance

    with _database().sessionmaker() as s:
        q = select(Instance).order_by(Instance.created_at)
        if not show_all:
            q = q.where(Instance.deleted_at.is_(None))
        rows = [_instance_row(i) for i in s.scalars(q)]
    emit(rows, as_json, _instance_line)


@instances.command("show")
@click.argument("uid")
@json_option
def instances_show(uid: str, as_json: bool) -> None:
    """One instance: state, owner, image and flavour, cloud, dates."""
    from visa.errors import NotFound
    from visa.instances.models import Instance

    with _database().sessionmaker() as s:
        instance = s.scalar(select(Instance).where(Instance.uid == uid))
        if instance is None:
            raise NotFound(f"no instance {uid!r}")
        row = _instance_row(instance)
    emit(row, as_json, _fields)


@instances.command("render-userdata")
@click.argument("uid")
@json_option
def instances_render_userdata(uid: str, as_json: bool) -> None:
    """Print what an instance receives at boot (secrets masked)."""
    from visa.instances.spec import render_for_operator

    with _database().sessionmaker() as s:
        user_data = render_for_operator(s, uid)
    emit({"uid": uid, "user_data": user_data}, as_json, lambda r: r["user_data"])


if __name__ == "__main__":  # pragma: no cover
    main()
