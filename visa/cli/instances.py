"""``visa instances``: instances, for operators."""

from __future__ import annotations

from typing import Any

import click

from visa.actor import SYSTEM
from visa.cli.common import emit, fields, json_option, load_settings, open_database


@click.group()
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
    from visa.instances.service import all_instances

    with open_database().sessionmaker() as s:
        rows = [_instance_row(i) for i in all_instances(SYSTEM, s, deleted=show_all)]
    emit(rows, as_json, _instance_line)


@instances.command("show")
@click.argument("uid")
@json_option
def instances_show(uid: str, as_json: bool) -> None:
    """One instance: state, owner, image and flavour, cloud, dates."""
    from visa.instances.service import instance_by_uid

    with open_database().sessionmaker() as s:
        row = _instance_row(instance_by_uid(SYSTEM, s, uid))
    emit(row, as_json, fields)


@instances.command("render-userdata")
@click.argument("uid")
@json_option
def instances_render_userdata(uid: str, as_json: bool) -> None:
    """Print what an instance receives at boot (secrets masked)."""
    from visa.instances.spec import render_for_operator

    settings = load_settings()
    with open_database().sessionmaker() as s:
        user_data = render_for_operator(s, uid, settings.provisioning)
    emit({"uid": uid, "user_data": user_data}, as_json, lambda r: r["user_data"])
