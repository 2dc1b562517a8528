"""Setting up and serving: ``visa init``, ``demo``, ``run``, ``web``, ``gateway``, ``scheduler``
and ``check-config``."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import click

from visa.actor import SYSTEM
from visa.cli.common import emit, json_option, load_settings, open_database
from visa.clock import system_clock
from visa.db import Database
from visa.settings import Settings


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
    """Register the local cloud, once: as ``visa clouds add`` does (validated, audited); a local
    cloud already there keeps the settings an operator gave it."""
    from visa.clouds.service import list_clouds, register_cloud
    from visa.provisioning.site import cloud_check

    settings = load_settings()
    if settings.default_cloud != "local":
        return
    with database.unit_of_work() as s:
        if all(c.name != "local" for c in list_clouds(s)):
            register_cloud(SYSTEM, s, system_clock, "local", "local", local_cloud_config(settings),
                           check_site=cloud_check(settings.provisioning))


@click.command()
def init() -> None:
    """Create the data directory and the database, and register the local cloud."""
    from visa.migrate import upgrade

    settings = load_settings()
    database = open_database(check=False)
    upgrade(database.engine)
    ensure_local_cloud(database)
    click.echo(f"visa initialised: data in {settings.data_dir.resolve()}, database {database.engine.url!r}")


@click.command()
@click.option("--port", default=None, type=int, help="Port (default from settings: 8080)")
@click.option("--no-serve", is_flag=True, help="Prepare the demo and exit")
def demo(port: int | None, no_serve: bool) -> None:
    """Set up a demonstration on this machine (catalogue, experiments, users, data) and serve it."""
    from visa.demo import prepare_demo

    ctx = click.get_current_context()
    ctx.invoke(init)
    for line in prepare_demo(load_settings(), open_database()):
        click.echo(line)
    if not no_serve:
        ctx.invoke(run, port=port)


@click.command()
@click.option("--host", default=None, help="Address to listen on (default from settings)")
@click.option("--port", default=None, type=int, help="Port (default from settings: 8080)")
@click.option("--workers", default=1, show_default=True, type=int)
def run(host: str | None, port: int | None, workers: int) -> None:
    """Serve visa: pages, REST API and the desktop gateway."""
    import uvicorn

    settings = load_settings()
    open_database()  # refuse to start on an old schema, with the command that fixes it
    from visa.checks import check_all

    problems = [f for f in check_all(settings, provider_level="warning") if f.level != "ok"]
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


@click.command()
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
    settings = load_settings()
    open_database()
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


@click.command()
@click.option("--host", default=None, help="Address to listen on (default: gateway.host)")
@click.option("--port", default=None, type=int, help="Port (default: gateway.port, 8081)")
@click.option("--workers", default=1, show_default=True, type=int)
def gateway(host: str | None, port: int | None, workers: int) -> None:
    """Serve the desktop relay (/ws/) and the instances' web proxies (the user-content hosts)
    apart from the web, so that web deploys and restarts drop no open desktop."""
    import uvicorn

    from visa.serving import UVICORN_OPTIONS

    settings = load_settings()
    open_database()
    uvicorn.run(
        "visa.asgi:create_gateway_app", factory=True, host=host or settings.gateway.host,
        port=port or settings.gateway.port, workers=workers, log_level="info", **UVICORN_OPTIONS,
    )


@click.command()
@click.option("--no-worker", is_flag=True, help="Do not carry out instance commands in this process")
def scheduler(no_worker: bool) -> None:
    """Run the periodic jobs (state sync, activity, lifetimes, emails, clean-up) when this process
    holds the leader lease; any number may run, one leads at a time. /metrics and /health on
    scheduler.metrics_port."""
    from visa import logs
    from visa.scheduler.runner import Runner
    from visa.services import Services

    settings = load_settings()
    logs.configure(settings.log_json)  # the web's format: JSON lines when log_json
    Runner(Services(settings=settings, database=open_database()), worker=not no_worker).run_forever()


@click.command("check-config")
@click.option("--probe-clouds", is_flag=True, help="Also ask every enabled cloud for its limits (10 s timeout)")
@json_option
def check_config(probe_clouds: bool, as_json: bool) -> None:
    """Validate the configuration: settings, data directory, database schema, clouds. Exit
    status 1 when an error is found."""
    from visa.checks import check_all

    findings = check_all(load_settings(), probe_clouds=probe_clouds)
    errors = sum(f.level == "error" for f in findings)
    summary = f"{errors} error(s), {sum(f.level == 'warning' for f in findings)} warning(s)"
    if as_json:
        emit({"findings": [dataclasses.asdict(f) for f in findings], "errors": errors}, True, str)
    else:
        emit([str(f) for f in findings] + [summary], False, str)
    if errors:
        sys.exit(1)
