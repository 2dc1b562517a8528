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
from visa.instances import listing
from visa.instances import service as instances
from visa.openapi import MAX_ID, doc, parse_query, respond
from visa.users import service as users
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
                                          site=svc.settings.provisioning)
    return respond(S.CloudRegisteredOut(name=cloud.name, kind=cloud.kind, enabled=cloud.enabled))


@bp.get("/gpus")
@doc("GPU pools per cloud (the cloud's own total and used) and visa's machines holding GPUs",
     tags=["admin"], response=list[S.GpuPoolsOut])
def gpu_pools():
    return respond(serialize.gpu_pools(current_actor(), db_session(), services()))


# --- instances --------------------------------------------------------------------------------


@bp.get("/instances")
@doc("Everyone's instances: filter by state, owner, image, flavour, cloud; sort; paginate",
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


@bp.get("/instances/<uid>/userdata")
@doc("The user-data the machine receives at boot, as rendered now (secrets masked)",
     tags=["admin"], response=S.UserDataOut)
def instance_userdata(uid: str):
    text = instances.render_userdata(current_actor(), db_session(), services().clock, uid)
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
    instance = instances.set_member_access(actor, db_session(), services().clock, uid, data.mode)
    return respond(serialize.member_access(instance))


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

