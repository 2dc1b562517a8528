"""The authorisation matrix: every endpoint against every kind of actor, on both databases.

Actors (see ``world.py``): the instance's owner (staff), a USER member, a GUEST member, a
SUPPORT member (IT support), an admin who is not a member, another user, and anonymous.

Expected answers:
- ``A``: let through (any answer but 401/403/404-for-the-instance, never a 5xx); a domain
  refusal such as 409 "instance not running" still counts as let through;
- ``U`` 401, ``F`` 403, ``N`` 404 (the instance is not even visible), ``L`` a redirect to
  the login page, ``X`` anything but a 5xx (public endpoints).

Adding an endpoint? Add its row to ``FLASK`` (or ``ASGI``): ``test_every_flask_endpoint_has_a_row``
fails until you do. Path parameters: {uid} the shared instance, {other_uid} another user's
instance, {member} a USER member's name, {guest} the GUEST's name, {token_id} the owner's
API token, {requester} a pending support requester.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.auth.world import login, reset, seed
from visa.policy import POLICY

ACTORS = ("owner", "member", "guest", "support", "admin", "other", "anonymous")
A, U, F, N, L, X = "A", "U", "F", "N", "L", "X"


@dataclass(frozen=True)
class Row:
    endpoint: str
    method: str
    path: str
    expect: str  # one letter per actor, in ACTORS order
    json: dict[str, Any] | None = None
    form: dict[str, str] | None = None
    why: str = ""
    kw: dict[str, Any] = field(default_factory=dict)

    def expected(self) -> dict[str, str]:
        assert len(self.expect) == len(ACTORS), self
        return dict(zip(ACTORS, self.expect, strict=True))


# owner member guest support admin other anonymous
FLASK: list[Row] = [
    # public
    Row("health", "GET", "/health", "XXXXXXX"),
    Row("ready", "GET", "/health/ready", "XXXXXXX"),
    Row("auth_pages.login_page", "GET", "/login?next=//evil.example", "XXXXXXX"),
    Row("auth_pages.login", "POST", "/login", "XXXXXXX", form={"username": "x", "password": "y"}),
    Row("auth_pages.login_oidc", "GET", "/login/oidc", "XXXXXXX", why="no identity provider: back to /login"),
    Row("auth_pages.callback", "GET", "/auth/callback?code=x&state=y", "XXXXXXX"),
    Row("auth_pages.logout_page", "GET", "/logout", "XXXXXXX"),
    Row("auth_pages.logout", "POST", "/logout", "XXXXXXX"),
    Row("auth_api.login", "POST", "/api/login", "XXXXXXX", json={"username": "nobody", "password": "wrong"},
        why="401, then 429 once rate-limited"),
    Row("auth_api.logout", "POST", "/api/logout", "AAAAAAF", why="no session, no CSRF token"),
    # the user's own things
    Row("auth_api.me", "GET", "/api/me", "AAAAAAU"),
    Row("auth_api.list_tokens", "GET", "/api/tokens", "AAAAAAU"),
    Row("auth_api.create_token", "POST", "/api/tokens", "AAAAAAU", json={"name": "t"}),
    Row("auth_api.revoke_token", "DELETE", "/api/tokens/{token_id}", "ANNNNNU", why="only one's own tokens"),
    Row("users_api.search", "GET", "/api/users/search?q=pe", "AAAAAAU"),
    Row("catalogue_api.plans", "GET", "/api/plans", "AAAAAAU"),
    Row("catalogue_api.capacity", "GET", "/api/capacity", "AAAAAAU"),
    Row("experiments_api.list_experiments", "GET", "/api/experiments", "AAAAAAU"),
    Row("experiments_api.open_data", "GET", "/api/experiments/open-data?q=ev&limit=5", "AAAAAAU",
        why="open data is public once its embargo has ended: any logged-in user"),
    Row("instances_api.list_instances", "GET", "/api/instances", "AAAAAAU"),
    Row("instances_api.create_instance", "POST", "/api/instances", "AAAAAAU",
        json={"name": "new", "plan_id": 0, "experiment_ids": []}, why="plan/experiment checks are domain answers"),
    # one instance
    Row("instances_api.get_instance", "GET", "/api/instances/{uid}", "AAAAANU"),
    Row("instances_api.edit_instance", "PATCH", "/api/instances/{uid}", "AFFFFNU", json={"comments": "edited"},
        why="the owner's own settings: not even an admin changes them"),
    Row("instances_api.set_member_access", "PUT", "/api/instances/{uid}/member-access", "AFFFANU",
        json={"mode": "owner_required"}, why="whether members may use the desktop while the owner is away: the owner's"),
    Row("instances_api.act", "POST", "/api/instances/{uid}/reboot", "AFFFANU"),
    Row("instances_api.delete", "DELETE", "/api/instances/{uid}", "AFFFANU"),
    Row("gateway_api.connect", "POST", "/api/instances/{uid}/connect", "AAAAFNU",
        why="admins connect as SUPPORT members only (approved by a staff owner)"),
    Row("thumbnails_api.get", "GET", "/api/instances/{uid}/thumbnail", "AAAAANU"),
    Row("thumbnails_api.put", "PUT", "/api/instances/{uid}/thumbnail", "AFFFFNU", kw={"data": b"\xff\xd8\xff",
        "content_type": "image/jpeg"}),
    # files in and out (the instance is still building: a 409 for those let through)
    Row("files_api.list_files", "GET", "/api/instances/{uid}/files", "AAFFFNU",
        why="OWNER and USER members only: not GUESTs, not SUPPORT, not admins"),
    Row("files_api.list_printed", "GET", "/api/instances/{uid}/printed", "AAFFFNU"),
    Row("files_api.download", "GET", "/api/instances/{uid}/files/content?path=/home/owner/a", "AAFFFNU"),
    Row("files_api.upload", "PUT", "/api/instances/{uid}/files/content?path=/home/owner/a", "AAFFFNU",
        kw={"data": b"x", "content_type": "application/octet-stream"}),
    # GPU bookings: anyone asks (the input is refused here); who decides on a real booking is
    # the service tests' (tests/bookings): no booking 1 exists, a domain 404 for all.
    Row("bookings_api.list_bookings", "GET", "/api/bookings", "AAAAAAU"),
    Row("bookings_api.request_booking", "POST", "/api/bookings", "AAAAAAU",
        json={"flavour": "x", "starts_on": "2030-01-01", "ends_on": "2030-01-01", "experiment_id": 1}),
    Row("bookings_api.get_booking", "GET", "/api/bookings/1", "AAAAAAU"),
    Row("bookings_api.decide_booking", "POST", "/api/bookings/1/accept", "AAAAAAU", json={}),
    Row("bookings_api.cancel_booking", "POST", "/api/bookings/1/cancel", "AAAAAAU"),
    Row("booking_pages.bookings", "GET", "/bookings", "AAAAAAL"),
    # lifetime extensions
    Row("extensions_api.request_extension", "POST", "/api/instances/{uid}/extensions", "AFFFANU",
        json={"requested_until": "2026-03-01T00:00:00+00:00"}),
    Row("extensions_api.list_extensions", "GET", "/api/extensions", "FFFFAFU", why="the admins' queue"),
    Row("extensions_api.handle_extension", "POST", "/api/extensions/1/accept", "FFFFAFU", json={},
        why="admins only (request 1 need not exist: a 404 for the admin is a domain answer)"),
    # sharing
    Row("members_api.list_members", "GET", "/api/instances/{uid}/members", "AAAAANU"),
    Row("members_api.add_member", "POST", "/api/instances/{uid}/members", "AFFFFNU",
        json={"username": "other", "role": "USER"}, why="letting someone in is the owner's consent alone"),
    Row("members_api.change_role", "PATCH", "/api/instances/{uid}/members/{member}", "AFFFANU", json={"role": "GUEST"}),
    Row("members_api.change_role", "PUT", "/api/instances/{uid}/members/{member}", "AFFFANU", json={"role": "GUEST"}),
    Row("members_api.revoke_member", "DELETE", "/api/instances/{uid}/members/{guest}", "AFAFANU",
        why="a member may leave: the guest removing themselves"),
    Row("members_api.request_support", "POST", "/api/instances/{uid}/support", "FFFAANU",
        why="support staff only; support is already a member (409), admin's request waits for the owner"),
    Row("members_api.pending_support", "GET", "/api/instances/{uid}/support", "AFFFANU"),
    Row("members_api.answer_support", "POST", "/api/instances/{uid}/support/{requester}/approve", "AFFFANU"),
    Row("members_api.presence", "GET", "/api/instances/{uid}/presence", "AAAAANU", why="every member sees who is on"),
    Row("members_api.support_sessions", "GET", "/api/instances/{uid}/support/sessions", "AFFFANU"),
    Row("members_api.list_invitations", "GET", "/api/instances/{uid}/invitations", "AFFFANU"),
    Row("members_api.create_invitation", "POST", "/api/instances/{uid}/invitations", "AFFFFNU", json={"role": "GUEST"},
        why="the owner's alone: an admin joins as support"),
    Row("members_api.revoke_invitation", "DELETE", "/api/instances/{uid}/invitations/1", "AFFFANU",
        why="invitation 1 need not exist: a 404 for the owner is a domain answer"),
    Row("members_api.list_view_links", "GET", "/api/instances/{uid}/view-links", "AFFFFNU"),
    Row("members_api.create_view_link", "POST", "/api/instances/{uid}/view-links", "AFFFFNU",
        json={"label": "talk", "hours": 1}, why="a public view link: the owner's consent alone, not even an admin's"),
    Row("members_api.revoke_view_link", "DELETE", "/api/instances/{uid}/view-links/1", "AFFFFNU",
        why="link 1 need not exist: a 404 for the owner is a domain answer"),
    Row("invitations_api.redeem", "POST", "/api/invitations/redeem", "AAAAAAU", json={"token": "x" * 32},
        why="any logged-in person may try a link; an unknown one is a domain 404"),
    Row("invitations_api.support_instances", "GET", "/api/support/instances", "FFFAAFU",
        why="support staff only: the owner is staff, not support"),
    # administration: admins only (staff, support and everyone else refused)
    Row("admin_api.stats", "GET", "/api/admin/stats", "FFFFAFU"),
    Row("admin_api.clouds", "GET", "/api/admin/clouds", "FFFFAFU"),
    Row("admin_api.register_cloud", "PUT", "/api/admin/clouds/spare", "FFFFAFU", json={"kind": "local"},
        why="a cloud's settings decide what every machine on it mounts: admins only"),
    Row("admin_api.gpu_pools", "GET", "/api/admin/gpus", "FFFFAFU"),
    Row("usage_api.usage", "GET", "/api/admin/usage", "FFFFAFU"),
    Row("usage_api.usage_report_json", "GET", "/api/admin/usage/report", "FFFFAFU",
        why="who used what, per person and proposal: admins only"),
    Row("usage_api.usage_report_csv", "GET", "/api/admin/usage/report.csv", "FFFFAFU"),
    Row("admin_api.list_users", "GET", "/api/admin/users", "FFFFAFU"),
    Row("admin_api.get_user", "GET", "/api/admin/users/{member}", "FFFFAFU"),
    Row("admin_api.grant_role", "POST", "/api/admin/users/{member}/roles", "FFFFAFU",
        json={"role": "ADMIN"}, why="privilege escalation: only admins grant roles"),
    Row("admin_api.revoke_role", "DELETE", "/api/admin/users/{member}/roles/ADMIN", "FFFFAFU"),
    Row("admin_api.set_quota", "PUT", "/api/admin/users/{member}/quota", "FFFFAFU", json={"quota": 5}),
    Row("admin_api.set_posix", "PUT", "/api/admin/users/{member}/posix", "FFFFAFU",
        json={"uid_number": 45678, "gid_number": 45678}),
    Row("admin_api.set_active", "PUT", "/api/admin/users/{member}/active", "FFFFAFU", json={"active": False}),
    Row("admin_api.revoke_sessions", "DELETE", "/api/admin/users/{member}/sessions", "FFFFAFU"),
    Row("admin_api.list_instruments", "GET", "/api/admin/instruments", "FFFFAFU"),
    Row("admin_api.add_scientist", "POST", "/api/admin/instruments/id21/scientists", "FFFFAFU",
        json={"username": "member"}, why="a scientist sees the instrument's machines: admins only"),
    Row("admin_api.remove_scientist", "DELETE", "/api/admin/instruments/id21/scientists/{member}", "FFFFAFU"),
    Row("admin_api.list_instances", "GET", "/api/admin/instances", "FFFFAFU"),
    Row("admin_api.get_instance", "GET", "/api/admin/instances/{uid}", "FFFFAFU"),
    Row("admin_api.instance_userdata", "GET", "/api/admin/instances/{uid}/userdata", "FFFFAFU"),
    Row("admin_api.instance_action", "POST", "/api/admin/instances/{uid}/actions", "FFFFAFU", json={"action": "reboot"}),
    Row("admin_api.instance_termination", "PUT", "/api/admin/instances/{uid}/termination", "FFFFAFU",
        json={"terminates_at": "2026-01-20T00:00:00+00:00"}),
    Row("admin_api.instance_member_access", "PUT", "/api/admin/instances/{uid}/member-access", "FFFFAFU",
        json={"mode": "owner_required"}),
    Row("admin_api.list_groups", "GET", "/api/admin/groups", "FFFFAFU"),
    Row("admin_api.create_group", "POST", "/api/admin/groups", "FFFFAFU", json={"name": "course"}),
    Row("admin_api.delete_group", "DELETE", "/api/admin/groups/course", "FFFFAFU",
        why="the group need not exist: a 404 for an admin is a domain answer"),
    Row("admin_api.add_group_member", "PUT", "/api/admin/groups/course/members", "FFFFAFU",
        json={"username": "member"}),
    Row("admin_api.remove_group_member", "DELETE", "/api/admin/groups/course/members/{member}", "FFFFAFU"),
    Row("admin_api.list_attributes", "GET", "/api/admin/attributes", "FFFFAFU"),
    Row("admin_api.define_attribute", "POST", "/api/admin/attributes", "FFFFAFU", json={"key": "project", "label": "P"}),
    Row("admin_api.delete_attribute", "DELETE", "/api/admin/attributes/project", "FFFFAFU",
        why="the key need not exist: a 404 for an admin is a domain answer"),
    Row("admin_api.set_instance_attribute", "PUT", "/api/admin/instances/{uid}/attributes", "FFFFAFU",
        json={"key": "project", "value": "v"}, why="an undefined key: a 400 for an admin is a domain answer"),
    Row("admin_api.unset_instance_attribute", "DELETE", "/api/admin/instances/{uid}/attributes/project", "FFFFAFU"),
    Row("admin_api.list_images", "GET", "/api/admin/images", "FFFFAFU"),
    Row("admin_api.get_image", "GET", "/api/admin/images/desktop", "FFFFAFU"),
    Row("admin_api.create_image", "POST", "/api/admin/images", "FFFFAFU", json={"name": "desktop2", "environment": "Desktop", "version": "1", "cloud_image": "d", "protocols": [{"protocol": "VNC", "port": 5901}]}),
    Row("admin_api.put_image", "PUT", "/api/admin/images/desktop", "FFFFAFU", json={"name": "desktop", "environment": "Desktop", "version": "1", "cloud_image": "d", "protocols": [{"protocol": "VNC", "port": 5901}]}),
    Row("admin_api.hide_image", "DELETE", "/api/admin/images/desktop", "FFFFAFU"),
    Row("admin_api.list_flavours", "GET", "/api/admin/flavours", "FFFFAFU"),
    Row("admin_api.get_flavour", "GET", "/api/admin/flavours/esrf.medium", "FFFFAFU"),
    Row("admin_api.create_flavour", "POST", "/api/admin/flavours", "FFFFAFU", json={"name": "esrf.small", "cores": 1, "memory_gb": 1, "cloud_flavour": "s"}),
    Row("admin_api.put_flavour", "PUT", "/api/admin/flavours/esrf.medium", "FFFFAFU", json={"name": "esrf.medium", "cores": 1, "memory_gb": 1, "cloud_flavour": "s"}),
    Row("admin_api.put_flavour_lifetimes", "PUT", "/api/admin/flavours/esrf.medium/lifetimes", "FFFFAFU",
        json={"lifetimes": [{"hours": 10}]}),
    Row("admin_api.put_flavour_limits", "PUT", "/api/admin/flavours/esrf.medium/limits", "FFFFAFU", json={}),
    Row("admin_api.hide_flavour", "DELETE", "/api/admin/flavours/esrf.medium", "FFFFAFU"),
    Row("admin_api.list_plans", "GET", "/api/admin/plans", "FFFFAFU"),
    Row("admin_api.create_plan", "POST", "/api/admin/plans", "FFFFAFU", json={"image": "desktop", "flavour": "esrf.medium"}),
    Row("admin_api.patch_plan", "PATCH", "/api/admin/plans/{plan_id}", "FFFFAFU", json={"enabled": False}),
    Row("admin_api.delete_plan", "DELETE", "/api/admin/plans/{plan_id}", "FFFFAFU"),
    Row("audit_api.events", "GET", "/api/admin/audit", "FFFFAFU"),
    Row("notifications_api.list_all", "GET", "/api/admin/notifications", "FFFFAFU"),
    Row("notifications_api.get", "GET", "/api/admin/notifications/1", "FFFFAFU"),
    Row("notifications_api.create", "POST", "/api/admin/notifications", "FFFFAFU", json={"message": "m"}),
    Row("notifications_api.update", "PUT", "/api/admin/notifications/1", "FFFFAFU", json={"message": "m"}),
    Row("notifications_api.delete", "DELETE", "/api/admin/notifications/1", "FFFFAFU"),
    Row("notifications_api.active", "GET", "/api/notifications", "AAAAAAU"),
    Row("notifications_api.ack", "POST", "/api/notifications/1/ack", "AAAAAAU"),
    # documentation and monitoring
    Row("openapi.docs_page", "GET", "/api/docs", "XXXXXXX"),
    Row("openapi.document_json", "GET", "/api/openapi.json", "XXXXXXX"),
    Row("metrics", "GET", "/metrics", "XXXXXXX"),
    # pages
    Row("instance_pages.home", "GET", "/", "AAAAAAL"),
    Row("instance_pages.home_cards", "GET", "/instances/_cards", "AAAAAAU"),
    Row("instance_pages.create", "GET", "/instances/new", "AAAAAAL"),
    Row("instance_pages.instance", "GET", "/instances/{uid}", "AAAAANL"),
    Row("instance_pages.instance_status", "GET", "/instances/{uid}/_status", "AAAAANU"),
    Row("instance_pages.desktop", "GET", "/instances/{uid}/desktop", "AAAAFNL"),
    Row("instance_pages.jupyter", "GET", "/instances/{uid}/jupyter", "AFFFFNL"),
    Row("sharing_pages.support_page", "GET", "/support", "FFFAAFL"),
    Row("help.root", "GET", "/help", "AAAAAAA", why="help is for everyone, logged in or not"),
    Row("help.page", "GET", "/help/", "AAAAAAA"),
    Row("help.page", "GET", "/help/states", "AAAAAAA"),
    Row("site.stylesheet", "GET", "/site.css", "AAAAAAA", why="the facility's colours, public like the static files"),
    Row("site.logo", "GET", "/site/logo", "NNNNNNN", why="the seed's site has no logo file: 404 for all"),
    Row("sharing_pages.invitation", "GET", "/invite/xxxxxxxxxxxxxxxxxxxxxxxx", "NNNNNNL", why="an unknown link: 404 for all"),
    Row("sharing_pages.view_link", "GET", "/view/xxxxxxxxxxxxxxxxxxxxxxxx", "NNNNNNN",
        why="a public view link needs no login; an unknown one: 404 for all"),
    # the owner is sent to the lab's own host with a one-time link; others are not told it exists
    Row("gateway_jupyter.jupyter", "GET", "/jupyter/{uid}/lab", "ANNNNNU"),
    Row("gateway_jupyter.web_service", "GET", "/services/{uid}/dash/", "NNNNNNU",
        why="the seed's image declares no web service: 404 for all (tests/gateway/test_web_services.py: the owner's)"),
    # admin pages: only admins; anonymous visitors are sent to log in
    Row("admin_pages.dashboard", "GET", "/admin/", "FFFFAFL"),
    Row("admin_pages.instances", "GET", "/admin/instances", "FFFFAFL"),
    Row("admin_pages.extensions", "GET", "/admin/extensions", "FFFFAFL"),
    Row("admin_pages.gpus", "GET", "/admin/gpus", "FFFFAFL"),
    Row("admin_pages.usage_report", "GET", "/admin/usage", "FFFFAFL"),
    Row("admin_pages.instance", "GET", "/admin/instances/{uid}", "FFFFAFL"),
    Row("admin_pages.groups", "GET", "/admin/groups", "FFFFAFL"),
    Row("admin_pages.catalogue", "GET", "/admin/catalogue", "FFFFAFL"),
    Row("admin_pages.users", "GET", "/admin/users", "FFFFAFL"),
    Row("admin_pages.instruments", "GET", "/admin/instruments", "FFFFAFL"),
    Row("admin_pages.notifications", "GET", "/admin/notifications", "FFFFAFL"),
    Row("admin_pages.audit", "GET", "/admin/audit", "FFFFAFL"),
]

NOT_IN_MATRIX = {"static": "files of the front end, public by design"}

# Calls that pass an action to the policy, and the position of the action among their arguments.
# Only inside these functions themselves may the action be a variable (the one they forward).
GATES = {"require": 1, "allowed": 1, "admin_page": 0, "check_access": 4}


def _actions_named_in_code() -> dict[str, list[str]]:
    """Every action a gate in visa/ is called with, with where."""
    root = Path(__file__).resolve().parents[2]
    found: dict[str, list[str]] = {}

    def visit(node: ast.AST, where: Path, inside: tuple[str, ...]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inside = (*inside, node.name)
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            at = GATES.get(name or "")
            if at is not None and len(node.args) > at:
                action = node.args[at]
                here = f"{where.relative_to(root)}:{node.lineno}"
                choices = [action.body, action.orelse] if isinstance(action, ast.IfExp) else [action]
                if all(isinstance(c, ast.Constant) and isinstance(c.value, str) for c in choices):
                    for c in choices:
                        found.setdefault(c.value, []).append(here)
                else:
                    assert set(inside) & set(GATES), f"{here}: write the action out, for this test to read it"
        for child in ast.iter_child_nodes(node):
            visit(child, where, inside)

    for path in sorted((root / "visa").rglob("*.py")):
        visit(ast.parse(path.read_text(), str(path)), path, ())
    return found


def test_every_action_the_code_asks_for_is_in_the_policy() -> None:
    named = _actions_named_in_code()
    assert len(named) > 20  # the scan sees the gates
    unknown = {a: where for a, where in named.items() if a not in POLICY}
    assert not unknown, f"actions missing from POLICY (visa/policy/table.py): {unknown}"
    unused = sorted(set(POLICY) - set(named))
    assert not unused, f"POLICY entries no code asks for: {unused}"


def _methods(rule) -> set[str]:
    return set(rule.methods or ()) - {"HEAD", "OPTIONS"}


def test_every_flask_endpoint_has_a_row(app) -> None:
    have = {(r.endpoint, r.method) for r in FLASK}
    missing = sorted(
        f"{m} {rule.rule} ({rule.endpoint})"
        for rule in app.url_map.iter_rules() if rule.endpoint not in NOT_IN_MATRIX
        for m in _methods(rule) if (rule.endpoint, m) not in have
    )
    assert not missing, "endpoints with no row in tests/policy/test_matrix.py FLASK: " + ", ".join(missing)
    stale = sorted(f"{e} {m}" for e, m in have if not any(
        rule.endpoint == e and m in _methods(rule) for rule in app.url_map.iter_rules()))
    assert not stale, f"rows for endpoints that no longer exist: {stale}"


def _path(row: Row, world) -> str:
    return row.path.format(uid=world.uid, other_uid=world.other_uid, member="member", guest="guest",
                           token_id=world.owner_token_id, requester="helpdesk", plan_id=world.plan_id)


def _check(row: Row, who: str, status: int, body: Any, location: str) -> str | None:
    want = row.expected()[who]
    if status >= 500:
        return f"{who}: {status} (server error)"
    instance_hidden = status == 404 and (not isinstance(body, dict) or "instance" in str(body.get("message", ""))
                                         or "token" in str(body.get("message", "")))
    got = {401: U, 403: F}.get(status, N if instance_hidden else A)
    if 300 <= status < 400:
        got = L if "/login" in location else A
    if want == X or got == want:
        return None
    if who == "anonymous" and {want, got} == {U, F}:
        return None  # refused either way: no session (401) or no CSRF token for a session (403)
    return f"{who}: expected {want}, got {got} ({status} {str(body)[:120]})"


def _run(row: Row, app, db, clock, api_client) -> list[str]:
    problems = []
    world = seed(db, clock)
    dirty = False
    for who in ACTORS:
        if dirty:
            reset(db)  # a state change by one actor must not decide the next one's answer
            world = seed(db, clock)
        c = login(api_client, db, who)
        kw: dict[str, Any] = dict(row.kw)
        if row.json is not None:
            kw["json"] = row.json
        if row.form is not None:
            kw["data"] = {**row.form, "csrf_token": c.csrf}
        path = _path(row, world)
        r = c.get(path, **kw) if row.method == "GET" else getattr(c, row.method.lower())(path, **kw)
        body = r.get_json(silent=True) if r.is_json else r.get_data(as_text=True)[:200]
        dirty = row.method != "GET" and r.status_code < 400
        problem = _check(row, who, r.status_code, body, r.headers.get("Location", ""))
        if problem:
            problems.append(problem)
    return problems


@pytest.mark.parametrize("row", FLASK, ids=[f"{r.method} {r.path}" for r in FLASK])
def test_flask_matrix(row: Row, app, db, clock, api_client) -> None:
    problems = _run(row, app, db, clock, api_client)
    assert not problems, f"{row.method} {row.path}: " + "; ".join(problems)


def test_no_cross_user_reads(app, db, clock, api_client) -> None:
    """Lists never show another user's things; nobody sees the other user's instance."""
    world = seed(db, clock)
    for who in ("owner", "member", "guest", "support", "admin"):
        c = login(api_client, db, who)
        uids = [i["uid"] for i in c.get("/api/instances").get_json()]
        assert world.other_uid not in uids, who
        if who != "admin":
            assert c.get(f"/api/instances/{world.other_uid}").status_code in (200, 404)
        assert c.get("/api/tokens").get_json() == [] or who == "owner"
        for row in FLASK:
            if "{uid}" in row.path and row.method == "GET":
                r = c.get(row.path.replace("{uid}", world.other_uid))
                allowed = who in ("admin", "support")  # admins and IT support see every instance
                assert r.status_code < 500, (who, row.path)
                if not allowed:
                    assert r.status_code in (302, 401, 403, 404), (who, row.path, r.status_code)


# --- Starlette-level routes (visa.asgi): the desktop gateway, the Jupyter proxy, events -----------------
@dataclass(frozen=True)
class AsgiRow:
    kind: str  # "http" or "websocket"
    path: str
    expect: str  # as FLASK; "-" = not checked for that actor (with why)
    why: str = ""


ASGI: list[AsgiRow] = [
    AsgiRow("websocket", "/ws/desktop/{uid}", "FFFFFFF", why="no connect token: refused for everyone"),
    AsgiRow("websocket", "/ws/desktop/{uid}?token=forged", "FFFFFFF", why="a made-up token"),
    AsgiRow("websocket", "/ws/view", "FFFFFFF", why="no view link: refused for everyone, a login opens nothing"),
    AsgiRow("websocket", "/ws/view?token=forged", "FFFFFFF", why="a made-up view link"),
    AsgiRow("http", "/api/events", "------U", why="an endless stream for logged-in users; covered by its own tests"),
]


def _asgi_client(app):
    from starlette.testclient import TestClient

    try:
        from visa.asgi import build_asgi
    except ImportError as exc:  # pragma: no cover
        pytest.skip(f"visa.asgi not importable: {exc}")
    return TestClient(build_asgi(app), base_url="http://127.0.0.1:8080")


def _cookie(app, db, who: str) -> dict[str, str]:
    if who == "anonymous":
        return {}
    from datetime import UTC, datetime

    from sqlalchemy import select

    from visa.auth.sessions import open_login_session, session_epoch
    from visa.users.models import User

    with db.unit_of_work() as s:
        user = s.scalar(select(User).where(User.username == who))
        _, sid = open_login_session(s, user, datetime.now(UTC), method="local")
        data = {"user_id": user.id, "epoch": session_epoch(user), "sid": sid, "csrf": "t", "_permanent": True}
    value = app.session_interface.get_signing_serializer(app).dumps(data)
    return {app.config["SESSION_COOKIE_NAME"]: value}


def _asgi_routes(app) -> set[str]:
    client = _asgi_client(app)
    return {getattr(r, "path", "") for r in client.app.routes}  # type: ignore[attr-defined]


@pytest.mark.parametrize("row", ASGI, ids=[f"{r.kind} {r.path}" for r in ASGI])
def test_asgi_matrix(row: AsgiRow, app, db, clock) -> None:
    from starlette.testclient import WebSocketDenialResponse
    from starlette.websockets import WebSocketDisconnect

    route = row.path.split("?")[0].replace("{uid}", "{uid}")
    known = _asgi_routes(app)
    if not any(route.startswith(p.split("{path")[0].rstrip("/")) and p for p in known if p not in ("", "/")):
        pytest.skip(f"{row.path}: no such route in visa.asgi yet")
    world = seed(db, clock)
    client = _asgi_client(app)
    problems = []
    for who, want in zip(ACTORS, row.expect, strict=True):
        if want == "-":
            continue
        client.cookies.clear()
        for k, v in _cookie(app, db, who).items():
            client.cookies.set(k, v)
        path = row.path.format(uid=world.uid)
        if row.kind == "websocket":
            got = A
            try:
                with client.websocket_connect(path, headers={"Origin": "http://127.0.0.1:8080"}) as ws:
                    ws.receive_bytes()
            except WebSocketDenialResponse as exc:
                got = F if exc.status_code in (401, 403, 404) else f"A ({exc.status_code})"
            except WebSocketDisconnect as exc:
                got = F if exc.code in (1008, 4401, 4403, 4404) or exc.code >= 4000 else A
            except Exception as exc:  # a refused handshake (HTTP answer) surfaces as an error
                got = F if "403" in str(exc) or "401" in str(exc) or "404" in str(exc) else A
        else:
            r = client.get(path, follow_redirects=False)
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text[:200]
            got_problem = _check(Row("asgi", "GET", row.path, row.expect), who, r.status_code, body,
                                 r.headers.get("location", ""))
            got = want if got_problem is None else f"? ({got_problem})"
        if got != want:
            problems.append(f"{who}: expected {want}, got {got}")
    assert not problems, f"{row.kind} {row.path}: " + "; ".join(problems)
