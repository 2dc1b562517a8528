"""``visa users``: accounts, roles, quotas, unix identities and login sessions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from visa.actor import SYSTEM
from visa.cli.common import emit, fields, json_option, load_settings, open_database
from visa.clock import system_clock


@click.group()
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
    database = open_database()
    with database.unit_of_work() as s:
        user = service.create_user(
            SYSTEM, s, system_clock, username=username, full_name=full_name, email=email, password=password,
            quota=quota, default_quota=load_settings().default_quota,
            reserved=service.reserved_usernames(load_settings().provisioning.probe_username),
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

    with open_database().unit_of_work() as s:
        user = service.get_user(s, username)
        service.grant_role(SYSTEM, s, system_clock, user, service.parse_role(role), expires_at=_when(until))
    click.echo(f"{username}: {role.upper()} granted" + (f" until {until}" if until else ""))


@users.command("revoke")
@click.argument("username")
@click.argument("role")
def users_revoke(username: str, role: str) -> None:
    from visa.users import service

    with open_database().unit_of_work() as s:
        user = service.get_user(s, username)
        removed = service.revoke_role(SYSTEM, s, system_clock, user, service.parse_role(role))
    click.echo(f"{username}: {role.upper()} revoked" if removed else f"{username} did not have {role.upper()}")


@users.command("quota", context_settings={"ignore_unknown_options": True})  # so "-1" is a value
@click.argument("username")
@click.argument("quota", type=int)
def users_quota(username: str, quota: int) -> None:
    """Set the instance quota (-1 = unlimited)."""
    from visa.users import service

    with open_database().unit_of_work() as s:
        service.set_quota(SYSTEM, s, system_clock, service.get_user(s, username), quota)
    click.echo(f"{username}: quota {quota}")


@users.command("passwd")
@click.argument("username")
def users_passwd(username: str) -> None:
    from visa.users import service

    password = click.prompt("new password", hide_input=True, confirmation_prompt=True)
    with open_database().unit_of_work() as s:
        service.set_password(SYSTEM, s, system_clock, service.get_user(s, username), password)
    click.echo("password changed")


@users.command("logout")
@click.argument("username")
def users_logout(username: str) -> None:
    """End every login session of the user, in every browser (a stolen cookie stops working)."""
    from visa.users import service

    with open_database().unit_of_work() as s:
        ended = service.revoke_sessions(SYSTEM, s, system_clock, service.get_user(s, username))
    click.echo(f"{username}: {ended} session(s) ended")


@users.command("deactivate")
@click.argument("username")
def users_deactivate(username: str) -> None:
    """Refuse the account's logins and tokens, and end its sessions."""
    from visa.users import service

    with open_database().unit_of_work() as s:
        service.set_active(SYSTEM, s, system_clock, service.get_user(s, username), False)
    click.echo(f"{username}: deactivated")


@users.command("activate")
@click.argument("username")
def users_activate(username: str) -> None:
    from visa.users import service

    with open_database().unit_of_work() as s:
        service.set_active(SYSTEM, s, system_clock, service.get_user(s, username), True)
    click.echo(f"{username}: active")


@users.command("link")
@click.argument("username")
@click.argument("subject")
@click.option("--issuer", help="Default: the configured identity provider's issuer")
def users_link(username: str, subject: str, issuer: str | None) -> None:
    """Link an existing account to an identity (the provider's subject): logins through the
    provider are matched by issuer and subject, never by name."""
    from visa.users import service

    settings = load_settings()
    if issuer is None:
        if not settings.oidc.enabled:
            raise click.ClickException("no identity provider configured: give --issuer")
        issuer = settings.oidc.issuer_url
    with open_database().unit_of_work() as s:
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

    settings = load_settings()
    with open_database().unit_of_work() as s:
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
    with open_database().unit_of_work() as s:
        user = service.get_user(s, username)
        service.adopt_unix_account(SYSTEM, s, system_clock, user, name, uid, replace=replace)
    click.echo(f"{username}: local sessions run as {name} (uid {uid})")


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
    from visa.users.service import all_users

    now = system_clock.now()
    with open_database().sessionmaker() as s:
        rows = [_user_row(u, now) for u in all_users(SYSTEM, s)]
    emit(rows, as_json, _user_line)


@users.command("show")
@click.argument("username")
@json_option
def users_show(username: str, as_json: bool) -> None:
    """One account: name, e-mail, quota, unix identity, roles, active or not."""
    from visa.users import service

    with open_database().sessionmaker() as s:
        row = _user_row(service.get_user(s, username), system_clock.now())
    emit(row, as_json, fields)


@users.command("groups")
@json_option
def users_groups(as_json: bool) -> None:
    """User groups and their members (from an administrator, or the identity provider's claim)."""
    from visa.users import groups

    with open_database().sessionmaker() as s:
        rows = [{"name": g.name, "description": g.description,
                 "members": [{"username": u, "source": src.value} for u, src in members]}
                for g, members in groups.list_groups(SYSTEM, s)]
    emit(rows, as_json, lambda r: f"{r['name']}: " + (", ".join(
        m["username"] + (" (provider)" if m["source"] == "IDP" else "") for m in r["members"]) or "-"))


@users.command("group-add")
@click.argument("name")
@click.option("--description", default="")
def users_group_add(name: str, description: str) -> None:
    """Make a user group (flavour limits, lifetimes and network rules may name it)."""
    from visa.users import groups

    with open_database().unit_of_work() as s:
        groups.create_group(SYSTEM, s, system_clock, name, description)
    click.echo(f"group {name} made")


@users.command("group-remove")
@click.argument("name")
def users_group_remove(name: str) -> None:
    """Remove a user group and its memberships."""
    from visa.users import groups

    with open_database().unit_of_work() as s:
        groups.delete_group(SYSTEM, s, system_clock, name)
    click.echo(f"group {name} removed")


@users.command("join")
@click.argument("username")
@click.argument("group")
def users_join(username: str, group: str) -> None:
    """Put a user in a group."""
    from visa.users import groups, service

    with open_database().unit_of_work() as s:
        added = groups.add_member(SYSTEM, s, system_clock, group, service.get_user(s, username))
    click.echo(f"{username} is in {group}" + ("" if added else " already"))


@users.command("leave")
@click.argument("username")
@click.argument("group")
def users_leave(username: str, group: str) -> None:
    """Take a user out of a group."""
    from visa.users import groups, service

    with open_database().unit_of_work() as s:
        groups.remove_member(SYSTEM, s, system_clock, group, service.get_user(s, username))
    click.echo(f"{username} left {group}")
