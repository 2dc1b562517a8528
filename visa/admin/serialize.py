"""Admin views of instances, users and the catalogue, shaped as the documented models."""

from __future__ import annotations

from visa.actor import Actor
from visa.admin import schemas as S
from visa.announcements.models import SystemNotification
from visa.audit.models import AuditEvent
from visa.catalogue.models import Image, Plan
from visa.clock import Clock
from visa.instances.models import Instance, InstanceCommand
from visa.instances.serialize import instance_out
from visa.users.models import User


def admin_instance(instance: Instance, actor: Actor, clock: Clock) -> S.AdminInstanceOut:
    return S.AdminInstanceOut(**_admin_fields(instance, actor, clock))


def _admin_fields(instance: Instance, actor: Actor, clock: Clock) -> dict:
    d = instance_out(instance, actor, clock).model_dump()
    d.update(
        state_changed_at=instance.state_changed_at,
        deleted_at=instance.deleted_at,
        cloud_server_id=instance.cloud_server_id,
        address=instance.address,
        members=[
            S.MemberOut(username=m.user.username, full_name=m.user.full_name, role=m.role.value)
            for m in sorted(instance.members, key=lambda m: (m.role.value != "OWNER", m.user.username))
        ],
    )
    return d


def instance_detail(
    instance: Instance, actor: Actor, clock: Clock, commands: list[tuple[InstanceCommand, str | None]],
    history: list[AuditEvent],
) -> S.InstanceDetailOut:
    return S.InstanceDetailOut(
        **_admin_fields(instance, actor, clock),
        experiments_detail=[
            S.ExperimentDetail(
                id=e.id, external_id=e.external_id, proposal=e.proposal.identifier, title=e.title or e.proposal.title,
                instrument=e.instrument.name, start_date=e.start_date.isoformat(), end_date=e.end_date.isoformat(),
            )
            for e in instance.experiments
        ],
        commands=[
            S.CommandOut(id=c.id, action=c.action.value, state=c.state.value, actor=name, message=c.message,
                         created_at=c.created_at, finished_at=c.finished_at)
            for c, name in commands
        ],
        history=[audit(e) for e in history],
        last_interaction_at=instance.last_interaction_at,
        owner_email=instance.owner.email,
    )


def audit(e: AuditEvent) -> S.AuditOut:
    return S.AuditOut(id=e.id, at=e.at, actor=e.actor_name, action=e.action, target_type=e.target_type,
                      target_id=e.target_id, details=e.details or {}, ip=e.ip)


def user(u: User, instances: int) -> S.AdminUserOut:
    return S.AdminUserOut(
        id=u.id, username=u.username, full_name=u.full_name, email=u.email, active=u.active,
        instance_quota=u.instance_quota, instances=instances,
        roles=[S.GrantOut(role=g.role, expires_at=g.expires_at, granted_at=g.granted_at)
               for g in sorted(u.grants, key=lambda g: g.role.value)],
        created_at=u.created_at, last_login_at=u.last_login_at,
    )


def image(i: Image, clouds: dict[int, str]) -> S.ImageOut:
    return S.ImageOut(
        id=i.id, name=i.name, environment=i.environment, version=i.version, description=i.description or "",
        icon=i.icon, cloud=clouds.get(i.cloud_id) if i.cloud_id else None, cloud_image=i.cloud_image_ref,
        visible=i.visible, autoaccept_extension=i.autoaccept_extension.value,
        protocols=[S.ProtocolOut(protocol=p.protocol.value, port=p.port, optional=p.optional) for p in i.protocols],
        options=i.options or {},
    )


def plan(p: Plan) -> S.AdminPlanOut:
    return S.AdminPlanOut(id=p.id, image=p.image.name, flavour=p.flavour.name, preset=p.preset, enabled=p.enabled,
                          image_visible=p.image.visible, flavour_visible=p.flavour.visible)


def notification(n: SystemNotification, acknowledged: int | None = None) -> S.NotificationOut:
    return S.NotificationOut(id=n.id, message=n.message, level=n.level, kind=n.kind, active_from=n.active_from,
                             active_until=n.active_until, created_at=n.created_at, acknowledged=acknowledged)
