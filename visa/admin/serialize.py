"""Admin views of instances, users, the catalogue and the clouds, shaped as the documented models.

The views that join two features (users with their instance counts, flavours with theirs, the
dashboard with the clouds) are put together here from each feature's own service functions."""

from __future__ import annotations

from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.admin import schemas as S
from visa.audit.models import AuditEvent
from visa.audit.serialize import audit_out
from visa.catalogue import service as catalogue
from visa.catalogue.models import Image, Plan
from visa.clock import Clock
from visa.clouds.base import is_gpu_class
from visa.clouds.service import CloudHost, CloudStatus, cloud_capacity, cloud_statuses, list_clouds
from visa.instances import service as instances
from visa.instances.attributes import attributes_of
from visa.instances.listing import InstanceRow
from visa.instances.models import ExtensionRequest, Instance, InstanceCommand
from visa.instances.serialize import instance_out, row_fields
from visa.paging import Total
from visa.users import service as users
from visa.users.models import User
from visa.users.schemas import UserQuery


def admin_instance(instance: Instance, actor: Actor, clock: Clock) -> S.AdminInstanceOut:
    return S.AdminInstanceOut(**_admin_fields(instance, actor, clock))


def _admin_fields(instance: Instance, actor: Actor, clock: Clock) -> dict:
    d = dict(instance_out(instance, actor, clock))  # its fields as they are: the nested models not validated twice
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


def admin_row(item: InstanceRow, clock: Clock) -> S.AdminInstanceOut:
    """``admin_instance`` from an admin page's row (visa/instances/listing.py)."""
    return S.AdminInstanceOut.model_validate(admin_row_fields(item, clock))


def admin_rows_page(items: list[InstanceRow], clock: Clock, total: Total, q: S.PageQuery) -> S.Page[S.AdminInstanceOut]:
    """A page of ``admin_row``, validated in one call (one pass in pydantic's core, not one a row)."""
    return _ADMIN_PAGE.validate_python({
        "items": [admin_row_fields(i, clock) for i in items], "total": total.count, "total_exact": total.exact,
        "page": q.page, "per_page": q.per_page,
    })


_ADMIN_PAGE = TypeAdapter(S.Page[S.AdminInstanceOut])


def admin_row_fields(item: InstanceRow, clock: Clock) -> dict:
    r = item.row
    return {
        **row_fields(item, clock),
        "state_changed_at": r.state_changed_at,
        "deleted_at": r.deleted_at,
        "cloud_server_id": r.cloud_server_id,
        "address": r.address,
        "members": [
            {"username": m.username, "full_name": m.full_name, "role": m.role.value}
            for m in sorted(item.members, key=lambda m: (m.role.value != "OWNER", m.username))
        ],
    }


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
        history=[audit_out(e) for e in history],
        last_interaction_at=instance.last_interaction_at,
        owner_email=instance.owner.email,
        attributes=attributes_of(instance),
        **_member_access(instance),
    )


def _member_access(instance: Instance) -> dict:
    return {"member_access": instances.member_access_mode(instance), "members_need_owner": instance.members_need_owner}


def pending_extension(req: ExtensionRequest, instance: Instance, untouched_tab_hours: float
                      ) -> S.PendingExtensionOut:
    return S.PendingExtensionOut(
        id=req.id, requested_until=req.requested_until, comment=req.comment, created_at=req.created_at,
        instance_uid=instance.uid, instance_name=instance.name, state=instance.state.value,
        owner=instance.owner.username, owner_full_name=instance.owner.full_name,
        flavour=instance.plan.flavour.name, terminates_at=instance.terminates_at,
        last_activity_at=instance.last_activity_at(untouched_tab_hours),
        last_interaction_at=instance.last_interaction_at, last_compute_at=instance.last_compute_at,
    )


def user(u: User, instances: int) -> S.AdminUserOut:
    return S.AdminUserOut(
        id=u.id, username=u.username, full_name=u.full_name, email=u.email, active=u.active,
        instance_quota=u.instance_quota, instances=instances, uid_number=u.uid_number, gid_number=u.gid_number,
        extra_gids=list(u.extra_gids or []), home_path=u.home_path, posix_source=u.posix_source,
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
        options=i.options or {}, web_services=list(i.web_services or []),
    )


def plan(p: Plan) -> S.AdminPlanOut:
    return S.AdminPlanOut(id=p.id, image=p.image.name, flavour=p.flavour.name, preset=p.preset, enabled=p.enabled,
                          image_visible=p.image.visible, flavour_visible=p.flavour.visible)


def cloud(c: CloudStatus, used: dict[str, int]) -> S.CloudOut:
    lim = c.limits
    return S.CloudOut(
        name=c.name, kind=c.kind, enabled=c.enabled, status=c.status, message=c.message,
        isolated=c.isolated, isolation=c.isolation,
        usage=S.CloudUsage(
            max_instances=lim.max_instances if lim else None,
            max_cores=lim.max_cores if lim else None,
            max_memory_mb=lim.max_memory_mb if lim else None,
            cloud_used_instances=lim.used_instances if lim else None,
            cloud_used_cores=lim.used_cores if lim else None,
            cloud_used_memory_mb=lim.used_memory_mb if lim else None,
            instances=used.get("instances", 0), cores=used.get("cores", 0),
            memory_mb=used.get("memory_mb", 0), gpus=used.get("gpus", 0),
        ),
    )


# --- views that join features -----------------------------------------------------------------


def stats(actor: Actor, session: Session, clock: Clock, services: CloudHost) -> S.StatsOut:
    return S.StatsOut(**instances.stats(actor, session, clock), clouds=clouds(actor, session, services))


def clouds(actor: Actor, session: Session, services: CloudHost) -> list[S.CloudOut]:
    """Each cloud with its quota (``Provider.limits``) and what visa's instances use of it."""
    used = instances.usage_by_cloud(actor, session)
    return [cloud(c, used.get(c.name, {})) for c in cloud_statuses(services)]


def users_page(actor: Actor, session: Session, clock: Clock, q: UserQuery) -> tuple[list[S.AdminUserOut], int]:
    found, total = users.list_users(actor, session, clock, q)
    counts = instances.owned_counts(session, [u.id for u in found])
    return [user(u, counts.get(u.id, 0)) for u in found], total


def one_user(actor: Actor, session: Session, username: str) -> S.AdminUserOut:
    found = users.find_user(actor, session, username)
    return user(found, instances.active_instance_count(session, found))


def flavours(actor: Actor, session: Session) -> list[S.FlavourOut]:
    counts = instances.by_flavour(session)
    return [
        S.FlavourOut(id=f.id, instances=counts.get(f.id, 0), memory_mb=f.memory_mb,
                     **spec.model_dump(exclude={"memory_gb"}))
        for f, spec in catalogue.list_flavours(actor, session)
    ]


def gpu_pools(actor: Actor, session: Session, host: CloudHost) -> list[S.GpuPoolsOut]:
    """Per cloud: its GPU pools (total, used, free) and who of visa's users holds GPUs there."""
    holders = instances.gpu_users(actor, session)
    out = []
    for cloud in list_clouds(session):
        answer = cloud_capacity(host, cloud.name) if cloud.enabled else None
        totals = answer.capacity.totals() if answer is not None and answer.capacity is not None else {}
        users = [
            S.GpuUserOut(instance_uid=i.uid, instance_name=i.name, state=i.state.value, owner=i.owner.username,
                         flavour=i.plan.flavour.name, gpu_kind=i.plan.flavour.gpu_kind,
                         gpus=i.plan.flavour.gpu_count, created_at=i.created_at)
            for i in holders if i.cloud_id == cloud.id
        ]
        out.append(S.GpuPoolsOut(
            cloud=cloud.name, kind=cloud.kind,
            pools=[S.PoolOut(resource_class=rc, total=p.total, used=p.used, free=p.free)
                   for rc, p in sorted(totals.items()) if is_gpu_class(rc)],
            users=users, visa_gpus=sum(u.gpus for u in users),
            message=("disabled" if not cloud.enabled else answer.message if answer is not None else None),
        ))
    return out
