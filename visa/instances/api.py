"""REST: the user's instances and their actions."""

from __future__ import annotations

from flask import Blueprint, jsonify

from visa.instances import service
from visa.instances.models import CommandAction
from visa.instances.schemas import CreateInstance
from visa.instances.serialize import instance_dict
from visa.web.context import current_actor, db_session, services
from visa.web.io import parse_body

bp = Blueprint("instances_api", __name__, url_prefix="/api/instances")


@bp.get("")
def list_instances():  # noqa: ANN201
    actor = current_actor()
    items = service.list_instances(actor, db_session())
    return jsonify([instance_dict(i, actor, services().clock) for i in items])


@bp.post("")
def create_instance():  # noqa: ANN201
    actor = current_actor()
    data = parse_body(CreateInstance)
    svc = services()
    instance = service.create_instance(actor, db_session(), svc.clock, svc.settings, data)
    return jsonify(instance_dict(instance, actor, svc.clock)), 201


@bp.get("/<uid>")
def get_instance(uid: str):  # noqa: ANN201
    actor = current_actor()
    return jsonify(instance_dict(service.get_instance(actor, db_session(), uid), actor, services().clock))


@bp.post("/<uid>/<any(start, stop, reboot):action>")
def act(uid: str, action: str):  # noqa: ANN201
    actor = current_actor()
    s = db_session()
    instance = service.get_instance(actor, s, uid)
    service.request_action(actor, s, services().clock, instance, CommandAction(action.upper()))
    return jsonify(instance_dict(instance, actor, services().clock)), 202


@bp.delete("/<uid>")
def delete(uid: str):  # noqa: ANN201
    actor = current_actor()
    s = db_session()
    instance = service.get_instance(actor, s, uid)
    service.request_action(actor, s, services().clock, instance, CommandAction.DELETE)
    return jsonify(instance_dict(instance, actor, services().clock)), 202
