"""REST for administrators: everyone's instances, users and roles, the catalogue, clouds.

Handlers parse with a schema, call one service function and serialise a documented model.
Extension requests are handled through ``/api/extensions`` (see the scheduler's API).
"""

from __future__ import annotations

from flask import Blueprint

from visa.admin import schemas as S
from visa.admin import serialize
from visa.audit import service as audit
from visa.catalogue import service as catalogue
from visa.catalogue.schemas import FlavourLimitsSpec, FlavourSpec, ImageSpec
from visa.clouds import service as clouds_service
from visa.errors import NotFound
from visa.experiments import service as experiments
from visa.experiments.models import Instrument
from visa.instances import attributes, listing
from visa.instances import service as instances
from visa.instances.serialize import member_access
from visa.openapi import MAX_ID, doc, parse_query, respond
from visa.provisioning.site import cloud_check
from visa.users import groups
from visa.users import service as users
from visa.users.models import GroupSource, UserGroup
from visa.users.schemas import GroupIn, GroupMemberIn, GroupMemberOut, GroupOut
from visa.web.context import current_actor, db_session, services
from visa.web.io import parse_body

bp = Blueprint("admin_api", __name__, url_prefix="/api/admin")

CATALOGUE_NOTE = (
    "Validated with the catalogue files' schema. The files are the source of truth: "
    "`visa catalogue apply` overwrites API edits of every entry the files name."
)


def _page(items: list, total: int, q: S.PageQuery) -> S.Page:
    return S.Page(items=items, total=total, page=q.page, per_page=q.per_page)


# --- dashboard and clouds ---------------------------------------------------------------------


@bp.get("/stats")
@doc("Dashboard figures: instances by state, image, flavour and cloud; sessions; cloud usage",
     tags=["admin"], response=S.StatsOut)
def stats():
    svc = services()
    return respond(serialize.stats(current_actor(), db_session(), svc.clock, svc))


@bp.get("/clouds")
@doc("Clouds with their quota (from the cloud, cached a few seconds) and visa's use of them",
     tags=["admin"], response=list[S.CloudOut])
def clouds():
    return respond(serialize.clouds(current_actor(), db_session(), services()))


@bp.put("/clouds/<name>")
@doc("Register a cloud, or change the kind and settings of the one of this name (audited, settings not logged)",
     tags=["admin"], body=S.CloudIn, response=S.CloudRegisteredOut)
def register_cloud(name: str):
    actor, data, svc = current_actor(), parse_body(S.CloudIn), services()
    cloud = clouds_service.register_cloud(actor, db_session(), svc.clock, name, data.kind, data.config,
                                          check_site=cloud_check(svc.settings.provisioning))
    return respond(S.CloudRegisteredOut(name=cloud.name, kind=cloud.kind, enabled=cloud.enabled))


@bp.get("/gpus")
@doc("GPU pools per cloud (the cloud's own total and used) and visa's machines holding GPUs",
     tags=["admin"], response=list[S.GpuPoolsOut])
def gpu_pools():
    return respond(serialize.gpu_pools(current_actor(), db_session(), services()))


# --- instances --------------------------------------------------------------------------------


@bp.get("/instances")
@doc("Everyone's instances: filter by state, owner, image, flavour, cloud, attribute (key:value); sort; paginate",
     tags=["admin"], query=S.InstanceQuery, response=S.Page[S.AdminInstanceOut])
def list_instances():
    actor, q = current_actor(), parse_query(S.InstanceQuery)
    items, total = listing.search_rows(actor, db_session(), q)
    clock = services().clock
    return respond(serialize.admin_rows_page(items, clock, total, q))


@bp.get("/instances/<uid>")
@doc("One instance with members, experiments, command history and audit trail",
     tags=["admin"], response=S.InstanceDetailOut)
def get_instance(uid: str):
    actor, s = current_actor(), db_session()
    instance = instances.get_any_instance(actor, s, uid)
    commands = instances.instance_commands(actor, s, instance)
    history = audit.instance_history(actor, s, instance.uid)
    return respond(serialize.instance_detail(instance, actor, services().clock, commands, history))


@bp.get("/attributes")
@doc("The attribute keys administrators set on instances, with their labels and how many instances have one",
     tags=["admin"], response=list[S.AttributeDefinitionOut])
def list_attributes():
    return respond(attributes.list_definitions(current_actor(), db_session()))


@bp.post("/attributes")
@doc("Define an attribute key, or change its label (audited)", tags=["admin"], body=S.AttributeDefinitionIn,
     response=S.AttributeDefinitionOut, status=201)
def define_attribute():
    data = parse_body(S.AttributeDefinitionIn)
    out, created = attributes.define_attribute(current_actor(), db_session(), services().clock, data)
    return respond(out, 201 if created else 200)


@bp.delete("/attributes/<key>")
@doc("Remove an attribute key and its values on every instance (audited)", tags=["admin"], status=204)
def delete_attribute(key: str):
    attributes.delete_definition(current_actor(), db_session(), services().clock, key)
    return "", 204


@bp.put("/instances/<uid>/attributes")
@doc("Set a defined attribute on an instance (audited); an unknown key or a value over 255 characters "
     "is refused with the field named", tags=["admin"], body=S.AttributeIn, response=S.InstanceAttributesOut)
def set_instance_attribute(uid: str):
    actor, s = current_actor(), db_session()
    instance = instances.get_any_instance(actor, s, uid, deleted=False)
    attributes.set_attribute(actor, s, services().clock, instance, parse_body(S.AttributeIn))
    return respond(S.InstanceAttributesOut(uid=instance.uid, attributes=attributes.attributes_of(instance)))


@bp.delete("/instances/<uid>/attributes/<key>")
@doc("Remove an attribute from an instance (audited)", tags=["admin"], response=S.InstanceAttributesOut)
def unset_instance_attribute(uid: str, key: str):
    actor, s = current_actor(), db_session()
    instance = instances.get_any_instance(actor, s, uid, deleted=False)
    attributes.unset_attribute(actor, s, services().clock, instance, key)
    return respond(S.InstanceAttributesOut(uid=instance.uid, attributes=attributes.attributes_of(instance)))


@bp.get("/instances/<uid>/userdata")
@doc("The user-data the machine receives at boot, as rendered now (secrets masked)",
     tags=["admin"], response=S.UserDataOut)
def instance_userdata(uid: str):
    svc = services()
    text = instances.render_userdata(current_actor(), db_session(), svc.clock, svc.settings, uid)
    return respond(S.UserDataOut(uid=uid, user_data=text))


@bp.post("/instances/<uid>/actions")
@doc("Reboot, stop, start or delete any instance (carried out by the worker)",
     tags=["admin"], body=S.ActionIn, response=S.AdminInstanceOut, status=202)
def instance_action(uid: str):
    actor, data = current_actor(), parse_body(S.ActionIn)
    instance = instances.act_on_instance(actor, db_session(), services().clock, uid, data.command)
    return respond(serialize.admin_instance(instance, actor, services().clock), 202)


@bp.put("/instances/<uid>/termination")
@doc("Change the termination date (audited)", tags=["admin"], body=S.TerminationIn, response=S.AdminInstanceOut)
def instance_termination(uid: str):
    actor, data = current_actor(), parse_body(S.TerminationIn)
    clock = services().clock
    instance = instances.change_termination(actor, db_session(), clock, uid, data.terminates_at, data.reason)
    return respond(serialize.admin_instance(instance, actor, clock))


@bp.put("/instances/<uid>/member-access")
@doc("Whether members need the owner connected, for this instance (audited)", tags=["admin"],
     body=S.MemberAccessIn, response=S.MemberAccessOut)
def instance_member_access(uid: str):
    actor, data = current_actor(), parse_body(S.MemberAccessIn)
    s = db_session()
    instance = instances.get_any_instance(actor, s, uid, deleted=False)
    instances.set_member_access(actor, s, services().clock, instance, data.mode)
    return respond(member_access(instance))


# --- users ------------------------------------------------------------------------------------


@bp.get("/users")
@doc("Users: search by username, name or email, filter by role, paginate",
     tags=["admin"], query=S.UserQuery, response=S.Page[S.AdminUserOut])
def list_users():
    q = parse_query(S.UserQuery)
    rows, total = serialize.users_page(current_actor(), db_session(), services().clock, q)
    return respond(_page(rows, total, q))


def _user_out(username: str) -> S.AdminUserOut:
    return serialize.one_user(current_actor(), db_session(), username)


@bp.get("/users/<username>")
@doc("One user", tags=["admin"], response=S.AdminUserOut)
def get_user(username: str):
    return respond(_user_out(username))


@bp.post("/users/<username>/roles")
@doc("Grant (or renew) a role, optionally until a date (GUEST must expire)",
     tags=["admin"], body=S.GrantIn, response=S.AdminUserOut)
def grant_role(username: str):
    actor, data, s = current_actor(), parse_body(S.GrantIn), db_session()
    users.grant_role(actor, s, services().clock, users.get_user(s, username), data.role, expires_at=data.expires_at)
    return respond(_user_out(username))


@bp.delete("/users/<username>/roles/<role>")
@doc("Revoke a role", tags=["admin"], response=S.AdminUserOut)
def revoke_role(username: str, role: str):
    actor, s = current_actor(), db_session()
    users.revoke_role(actor, s, services().clock, users.get_user(s, username), users.parse_role(role))
    return respond(_user_out(username))


def _group_out(name: str) -> GroupOut:
    actor, s = current_actor(), db_session()
    for group, members in groups.list_groups(actor, s):
        if group.name == name:
            return _group(group, members)
    raise NotFound("no such group", field="group")


def _group(group: UserGroup, members: list[tuple[str, GroupSource]]) -> GroupOut:
    return GroupOut(name=group.name, description=group.description,
                    members=[GroupMemberOut(username=u, source=src.value) for u, src in members])


@bp.get("/groups")
@doc("User groups and their members (added by administrators, or from the identity provider's claim)",
     tags=["admin"], response=list[GroupOut])
def list_groups():
    return respond([_group(g, m) for g, m in groups.list_groups(current_actor(), db_session())])


@bp.post("/groups")
@doc("Make a user group (audited); flavour limits, lifetimes and network rules name it", tags=["admin"],
     body=GroupIn, response=GroupOut, status=201)
def create_group():
    data = parse_body(GroupIn)
    group = groups.create_group(current_actor(), db_session(), services().clock, data.name, data.description)
    return respond(_group(group, []), 201)


@bp.delete("/groups/<name>")
@doc("Remove a user group and its memberships (audited)", tags=["admin"], status=204)
def delete_group(name: str):
    groups.delete_group(current_actor(), db_session(), services().clock, name)
    return "", 204


@bp.put("/groups/<name>/members")
@doc("Put a user in a group (audited)", tags=["admin"], body=GroupMemberIn, response=GroupOut)
def add_group_member(name: str):
    actor, data, s = current_actor(), parse_body(GroupMemberIn), db_session()
    groups.add_member(actor, s, services().clock, name, users.get_user(s, data.username))
    return respond(_group_out(name))


@bp.delete("/groups/<name>/members/<username>")
@doc("Take a user out of a group (audited; one the identity provider names comes back at their next login)",
     tags=["admin"], response=GroupOut)
def remove_group_member(name: str, username: str):
    actor, s = current_actor(), db_session()
    groups.remove_member(actor, s, services().clock, name, users.get_user(s, username))
    return respond(_group_out(name))


@bp.put("/users/<username>/quota")
@doc("Set the instance quota (-1 = unlimited)", tags=["admin"], body=S.QuotaIn, response=S.AdminUserOut)
def set_quota(username: str):
    actor, data, s = current_actor(), parse_body(S.QuotaIn), db_session()
    users.set_quota(actor, s, services().clock, users.get_user(s, username), data.quota)
    return respond(_user_out(username))


@bp.put("/users/<username>/posix")
@doc("Set the user's unix identity (uid, gid, supplementary gids, home path); audited. 409 for a uid "
     "another account has or an identity the identity provider gives; 400 below the system range",
     tags=["admin"], body=S.PosixIn, response=S.AdminUserOut)
def set_posix(username: str):
    actor, data, s, svc = current_actor(), parse_body(S.PosixIn), db_session(), services()
    posix = users.Posix(data.uid_number, data.gid_number, tuple(data.extra_gids), data.home_path or None)
    users.set_posix(actor, s, svc.clock, users.get_user(s, username), posix, source="admin",
                    limits=svc.settings.posix)
    return respond(_user_out(username))


@bp.put("/users/<username>/active")
@doc("Deactivate (logged out everywhere, logins and tokens refused) or reactivate an account",
     tags=["admin"], body=S.ActiveIn, response=S.AdminUserOut)
def set_active(username: str):
    actor, data, s = current_actor(), parse_body(S.ActiveIn), db_session()
    users.set_active(actor, s, services().clock, users.get_user(s, username), data.active)
    return respond(_user_out(username))


@bp.delete("/users/<username>/sessions")
@doc("Log the user out everywhere: every browser session of theirs ends now",
     tags=["admin"], response=S.AdminUserOut)
def revoke_sessions(username: str):
    actor, s = current_actor(), db_session()
    users.revoke_sessions(actor, s, services().clock, users.get_user(s, username))
    return respond(_user_out(username))


# --- instruments ------------------------------------------------------------------------------


def _instrument_out(inst: Instrument) -> S.InstrumentOut:
    return S.InstrumentOut(name=inst.name, scientists=[
        S.ScientistOut(username=u.username, full_name=u.full_name) for u in sorted(inst.scientists, key=lambda u: u.username)
    ])


@bp.get("/instruments")
@doc("Instruments with their scientists (who see the instrument's machines on /support)",
     tags=["admin"], response=list[S.InstrumentOut])
def list_instruments():
    return respond([_instrument_out(i) for i in experiments.list_instruments(current_actor(), db_session())])


@bp.post("/instruments/<name>/scientists")
@doc("Make a user a scientist of the instrument (granting INSTRUMENT_SCIENTIST); audited. An import that "
     "states the instrument's scientists sets them again as the user office says",
     tags=["admin"], body=S.ScientistIn, response=S.InstrumentOut)
def add_scientist(name: str):
    actor, data, s = current_actor(), parse_body(S.ScientistIn), db_session()
    experiments.add_scientist(actor, s, services().clock, name, data.username)
    return respond(_instrument_out(experiments.get_instrument(s, name)))


@bp.delete("/instruments/<name>/scientists/<username>")
@doc("The user no longer supports the instrument's users; audited", tags=["admin"], response=S.InstrumentOut)
def remove_scientist(name: str, username: str):
    actor, s = current_actor(), db_session()
    experiments.remove_scientist(actor, s, services().clock, name, username)
    return respond(_instrument_out(experiments.get_instrument(s, name)))


# --- catalogue: flavours ----------------------------------------------------------------------


def _flavour_out(name: str) -> S.FlavourOut:
    for f in serialize.flavours(current_actor(), db_session()):
        if f.name == name:
            return f
    from visa.errors import NotFound

    raise NotFound(f"no flavour {name[:64]!r}", field="name")


@bp.get("/flavours")
@doc("Flavours (hidden ones too) with their limits and lifetimes", tags=["admin", "catalogue"],
     response=list[S.FlavourOut])
def list_flavours():
    return respond(serialize.flavours(current_actor(), db_session()))


@bp.post("/flavours")
@doc("Create a flavour", tags=["admin", "catalogue"], body=FlavourSpec, response=S.FlavourOut, status=201,
     description=CATALOGUE_NOTE)
def create_flavour():
    spec = parse_body(FlavourSpec)
    catalogue.save_flavour(current_actor(), db_session(), services().clock, spec, create=True)
    return respond(_flavour_out(spec.name), 201)


@bp.get("/flavours/<name>")
@doc("One flavour", tags=["admin", "catalogue"], response=S.FlavourOut)
def get_flavour(name: str):
    catalogue.get_flavour(current_actor(), db_session(), name)
    return respond(_flavour_out(name))


@bp.put("/flavours/<name>")
@doc("Replace a flavour (limits and lifetimes included)", tags=["admin", "catalogue"], body=FlavourSpec,
     response=S.FlavourOut, description=CATALOGUE_NOTE)
def put_flavour(name: str):
    spec = parse_body(FlavourSpec)
    catalogue.save_flavour(current_actor(), db_session(), services().clock, spec, name=name)
    return respond(_flavour_out(name))


@bp.put("/flavours/<name>/limits")
@doc("Limit a flavour to roles and/or instruments (empty: open to all)", tags=["admin", "catalogue"],
     body=FlavourLimitsSpec, response=S.FlavourOut, description=CATALOGUE_NOTE)
def put_flavour_limits(name: str):
    catalogue.set_flavour_limits(current_actor(), db_session(), services().clock, name, parse_body(FlavourLimitsSpec))
    return respond(_flavour_out(name))


@bp.put("/flavours/<name>/lifetimes")
@doc("Maximum lifetimes on a flavour, per role (no role: everyone)", tags=["admin", "catalogue"],
     body=S.LifetimesIn, response=S.FlavourOut, description=CATALOGUE_NOTE)
def put_flavour_lifetimes(name: str):
    data = parse_body(S.LifetimesIn)
    catalogue.set_flavour_lifetimes(current_actor(), db_session(), services().clock, name, data.lifetimes)
    return respond(_flavour_out(name))


@bp.delete("/flavours/<name>")
@doc("Hide a flavour (never deleted: instances refer to it)", tags=["admin", "catalogue"], response=S.FlavourOut)
def hide_flavour(name: str):
    catalogue.hide_flavour(current_actor(), db_session(), services().clock, name)
    return respond(_flavour_out(name))


# --- catalogue: images and plans --------------------------------------------------------------


def _image_out(image) -> S.ImageOut:
    return serialize.image(image, clouds_service.cloud_names(db_session()))


@bp.get("/images")
@doc("Images (hidden ones too)", tags=["admin", "catalogue"], response=list[S.ImageOut])
def list_images():
    clouds = clouds_service.cloud_names(db_session())
    return respond([serialize.image(i, clouds) for i in catalogue.list_images(current_actor(), db_session())])


@bp.post("/images")
@doc("Create an image (with its plans)", tags=["admin", "catalogue"], body=ImageSpec, response=S.ImageOut,
     status=201, description=CATALOGUE_NOTE)
def create_image():
    image, _ = catalogue.save_image(current_actor(), db_session(), services().clock, parse_body(ImageSpec), create=True)
    return respond(_image_out(image), 201)


@bp.get("/images/<name>")
@doc("One image", tags=["admin", "catalogue"], response=S.ImageOut)
def get_image(name: str):
    return respond(_image_out(catalogue.get_image(current_actor(), db_session(), name)))


@bp.put("/images/<name>")
@doc("Replace an image; its plans become those listed", tags=["admin", "catalogue"], body=ImageSpec,
     response=S.ImageOut, description=CATALOGUE_NOTE)
def put_image(name: str):
    image, _ = catalogue.save_image(current_actor(), db_session(), services().clock, parse_body(ImageSpec), name=name)
    return respond(_image_out(image))


@bp.delete("/images/<name>")
@doc("Hide an image (never deleted: instances refer to it)", tags=["admin", "catalogue"], response=S.ImageOut)
def hide_image(name: str):
    return respond(_image_out(catalogue.hide_image(current_actor(), db_session(), services().clock, name)))


@bp.get("/plans")
@doc("Plans (disabled ones too)", tags=["admin", "catalogue"], response=list[S.AdminPlanOut])
def list_plans():
    return respond([serialize.plan(p) for p in catalogue.list_plans(current_actor(), db_session())])


@bp.post("/plans")
@doc("Create a plan: an image on a flavour (preset: the one offered first)", tags=["admin", "catalogue"],
     body=S.PlanIn, response=S.AdminPlanOut, status=201, description=CATALOGUE_NOTE)
def create_plan():
    plan = catalogue.create_plan(current_actor(), db_session(), services().clock, parse_body(S.PlanIn))
    return respond(serialize.plan(plan), 201)


@bp.patch(f"/plans/<int(max={MAX_ID}):plan_id>")
@doc("Enable, disable or make a plan the preset", tags=["admin", "catalogue"], body=S.PlanPatch,
     response=S.AdminPlanOut, description=CATALOGUE_NOTE)
def patch_plan(plan_id: int):
    plan = catalogue.update_plan(current_actor(), db_session(), services().clock, plan_id, parse_body(S.PlanPatch))
    return respond(serialize.plan(plan))


@bp.delete(f"/plans/<int(max={MAX_ID}):plan_id>")
@doc("Disable a plan (never deleted: instances refer to it)", tags=["admin", "catalogue"], response=S.AdminPlanOut)
def delete_plan(plan_id: int):
    return respond(serialize.plan(catalogue.disable_plan(current_actor(), db_session(), services().clock, plan_id)))

