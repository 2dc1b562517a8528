"""``visa clouds``: the clouds visa provisions on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from visa.actor import SYSTEM
from visa.cli.common import emit, json_option, load_settings, open_database
from visa.clock import system_clock


@click.group()
def clouds() -> None:
    """Clouds visa provisions on."""


@clouds.command("add")
@click.argument("name")
@click.option("--kind", required=True, help="local or openstack")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="JSON file of provider settings")
def clouds_add(name: str, kind: str, config_file: Path | None) -> None:
    """Register (or update) a cloud. Secrets may be given as {"env": "VAR"}."""
    from visa.clouds.service import register_cloud
    from visa.provisioning.site import cloud_check

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
        with open_database().unit_of_work() as s:
            register_cloud(SYSTEM, s, system_clock, name, kind, config,
                           check_site=cloud_check(load_settings().provisioning))
    except InvalidInput as exc:
        raise InvalidInput(f"{config_file or 'config'}: {exc.message}", field=exc.field) from None
    click.echo(f"cloud {name} ({kind}) registered")


@clouds.command("list")
@json_option
def clouds_list(as_json: bool) -> None:
    """Registered clouds and whether they take new instances (their settings are not shown: secrets)."""
    from visa.clouds.service import list_clouds

    with open_database().sessionmaker() as s:
        rows = [{"name": c.name, "kind": c.kind, "enabled": c.enabled} for c in list_clouds(s)]
    emit(rows, as_json, lambda r: f"{r['name']:16} {r['kind']:10} {'enabled' if r['enabled'] else 'disabled'}")


def _set_cloud_enabled(name: str, enabled: bool) -> None:
    from visa.clouds.service import set_cloud_enabled

    with open_database().unit_of_work() as s:
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


@clouds.command("secure-network")
@click.argument("name")
@click.option("--create", is_flag=True, help="Make the group right: create it, add what is missing, delete what is too open")
@click.option("--group", help="The group's name (default: network.base_group)")
@json_option
def clouds_secure_network(name: str, create: bool, group: str | None, as_json: bool) -> None:
    """Check the base security group of a cloud: the servers' desktop, Jupyter and SSH ports open
    only to network.access_from (visa's gateway and probe). Exits 1 when it is not right."""
    from visa.network.service import check_base_group
    from visa.services import Services

    settings = load_settings()
    services = Services(settings=settings, database=open_database())
    try:
        with services.database.sessionmaker() as s:
            report = check_base_group(SYSTEM, s, services.provider(name), settings.network, create=create,
                                      group=group)
    finally:
        services.close()
    data = {"cloud": report.cloud, "group": report.group, "ports": list(report.ports),
            "sources": list(report.sources), "ok": create or not report.lines, "lines": list(report.lines)}
    if as_json:
        emit(data, True, str)
    else:
        click.echo(f"cloud {report.cloud}: security group {report.group!r}, TCP {', '.join(map(str, report.ports))} "
                   f"from {', '.join(report.sources)} only")
        for line in report.lines or ["right as it is"]:
            click.echo(f"  {line}")
    if not data["ok"]:
        raise SystemExit(1)
