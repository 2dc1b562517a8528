"""User groups: named sets of users that catalogue limits, lifetimes and network rules name, as
they name roles. Administrators make groups and add members (page, API, command line); the
identity provider's group claim (``oidc.group_claim``) gives its own at each login: those
memberships follow the claim (added, and removed when the claim no longer names them), while
the ones administrators added stay until they remove them."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from visa.actor import SYSTEM, Actor
from visa.audit.service import record
from visa.clock import Clock
from visa.errors import Conflict, InvalidInput, NotFound
from visa.policy import require
from visa.users.models import GROUP_NAME_PATTERN, GroupMembership, GroupSource, User, UserGroup

log = logging.getLogger(__name__)

# At most this many groups are taken from one claim (a claim is the provider's, not ours to trust).
MAX_CLAIMED_GROUPS = 100


def valid_group_name(name: str, field: str = "name") -> str:
    if not isinstance(name, str) or not re.fullmatch(GROUP_NAME_PATTERN, name):
        raise InvalidInput("a group's name: letters, digits and . _ : @ - (up to 64, a letter or digit first)",
                           field=field)
    return name


def get_group(session: Session, name: str) -> UserGroup:
    group = session.scalar(select(UserGroup).where(UserGroup.name == name))
    if group is None:
        raise NotFound("no such group", field="group")
    return group


def list_groups(actor: Actor, session: Session) -> list[tuple[UserGroup, list[tuple[str, GroupSource]]]]:
    """Every group with its members (username, how they came in), by name."""
    require(actor, "manage_groups")
    groups = list(session.scalars(select(UserGroup).order_by(UserGroup.name)))
    rows = session.execute(select(GroupMembership.group_id, User.username, GroupMembership.source)
                           .join(User, User.id == GroupMembership.user_id).order_by(User.username))
    members: dict[int, list[tuple[str, GroupSource]]] = {}
    for group_id, username, source in rows:
        members.setdefault(group_id, []).append((username, source))
    return [(g, members.get(g.id, [])) for g in groups]


def create_group(actor: Actor, session: Session, clock: Clock, name: str, description: str = "") -> UserGroup:
    require(actor, "manage_groups")
    valid_group_name(name)
    if session.scalar(select(func.count()).select_from(UserGroup).where(UserGroup.name == name)):
        raise Conflict("a group of this name exists", field="name")
    group = UserGroup(name=name, description=description[:200], created_at=clock.now())
    session.add(group)
    session.flush()
    record(actor, session, clock, "group.create", target_type="group", target_id=name)
    return group


def delete_group(actor: Actor, session: Session, clock: Clock, name: str) -> None:
    """Remove a group and its memberships (what names it in the catalogue then matches nobody)."""
    require(actor, "manage_groups")
    group = get_group(session, name)
    members = len(group.memberships)
    session.delete(group)
    session.flush()
    record(actor, session, clock, "group.delete", target_type="group", target_id=name, members=members)


def add_member(actor: Actor, session: Session, clock: Clock, name: str, user: User) -> bool:
    """Put a user in a group (administrators'); False when they were in it already."""
    require(actor, "manage_groups")
    group = get_group(session, name)
    current = next((m for m in user.memberships if m.group_id == group.id), None)
    if current is not None:
        if current.source == GroupSource.ADMIN:
            return False
        current.source = GroupSource.ADMIN  # kept now even when the provider stops naming it
    else:
        user.memberships.append(GroupMembership(group=group, source=GroupSource.ADMIN, added_at=clock.now()))
    session.flush()
    record(actor, session, clock, "group.member.add", target_type="group", target_id=name, username=user.username)
    return True


def remove_member(actor: Actor, session: Session, clock: Clock, name: str, user: User) -> None:
    require(actor, "manage_groups")
    group = get_group(session, name)
    current = next((m for m in user.memberships if m.group_id == group.id), None)
    if current is None:
        raise NotFound(f"{user.username} is not in {name}", field="username")
    user.memberships.remove(current)
    session.flush()
    record(actor, session, clock, "group.member.remove", target_type="group", target_id=name,
           username=user.username, source=current.source.value)


def sync_claimed_groups(session: Session, clock: Clock, user: User, names: Iterable[str]) -> None:
    """The identity provider's groups for this user at a login: memberships from the provider follow
    the claim (a group it names that visa lacks is made); those administrators added stay. A value
    that is no valid group name is skipped, and logged."""
    wanted: set[str] = set()
    for value in names:
        if isinstance(value, str) and re.fullmatch(GROUP_NAME_PATTERN, value):
            wanted.add(value)
        else:
            log.warning("group claim value skipped: not a group name (%r)", str(value)[:80])
        if len(wanted) >= MAX_CLAIMED_GROUPS:
            break
    have = {m.group.name: m for m in user.memberships}
    added, removed = sorted(wanted - set(have)), []
    for name, m in list(have.items()):
        if m.source == GroupSource.IDP and name not in wanted:
            user.memberships.remove(m)
            removed.append(name)
    now = clock.now()
    for name in added:
        group = session.scalar(select(UserGroup).where(UserGroup.name == name))
        if group is None:
            group = UserGroup(name=name, description="from the identity provider", created_at=now)
            session.add(group)
        user.memberships.append(GroupMembership(group=group, source=GroupSource.IDP, added_at=now))
    if added or removed:
        session.flush()
        record(SYSTEM, session, clock, "user.groups.claimed", target_type="user", target_id=user.username,
               added=added, removed=removed)
