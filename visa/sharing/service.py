"""Who may use an instance besides its owner: members and support access.

Members are OWNER (one, never changed here), USER (desktop with input), GUEST (view only)
and SUPPORT (support staff). The owner adds USER or GUEST members; the owner or an admin
lowers their role and revokes them; members may leave. Support staff (admins, IT support,
instrument scientists of the instance's instruments, scientific computing, instrument control
within 7 days of its experiments) ask for access: the owner's open page shows a prompt. A staff
owner must answer (the request waits an hour); another owner is asked only while connected, and
their silence past the prompt's timeout lets support in, as their absence does. Every change is
audited.

Contract with the desktop gateway and the Jupyter proxy (``visa.gateway``):
- The database is the truth: a connection is allowed while ``allowed(actor,
  "instance.connect", instance)`` holds, and may send input while ``instance.input``
  holds. The gateway re-checks both on its periodic activity write (every
  ``activity_seconds``) and closes the socket when access is gone, or turns it view-only
  when the member became a GUEST; this works across processes with no messaging.
- For an immediate reaction in the same process, ``on_access_changed(callback)``
  registers ``callback(change)`` (an ``AccessChange``), called after the transaction
  that revoked or changed a member commits. Callbacks must be quick and never raise
  (exceptions are logged and swallowed).
- Revoking also deletes the member's unused connect tokens for the instance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from visa.actor import Actor, actor_for
from visa.audit.service import record
from visa.clock import Clock
from visa.db import after_commit
from visa.errors import Conflict, Forbidden, InvalidInput, NotFound
from visa.instances import emails
from visa.instances.models import ConnectToken, Instance, InstanceMember, MemberRole
from visa.mail.outbox import enqueue
from visa.policy import allowed, member_role, require, support_allowed
from visa.settings import Settings
from visa.sharing.models import SupportRequest, SupportState
from visa.sharing.schemas import PendingSupportOut
from visa.users.models import STAFF_ROLES, User

log = logging.getLogger(__name__)

SHAREABLE_ROLES = frozenset({MemberRole.USER, MemberRole.GUEST})
SUPPORT_REQUEST_TTL = timedelta(hours=1)
# How long the owner's page asks before a non-staff owner's silence counts as absence.
SUPPORT_PROMPT = timedelta(minutes=2)


@dataclass(frozen=True)
class AccessChange:
    instance_id: int
    instance_uid: str
    user_id: int
    username: str
    role: MemberRole | None  # None: revoked


_listeners: list[Callable[[AccessChange], None]] = []


def on_access_changed(callback: Callable[[AccessChange], None]) -> Callable[[AccessChange], None]:
    """Register a callback for committed revocations and role changes (usable as a decorator)."""
    _listeners.append(callback)
    return callback


def _publish(session: Session, change: AccessChange) -> None:
    def notify() -> None:
        for listener in list(_listeners):
            try:
                listener(change)
            except Exception:  # a listener must not undo a committed revocation
                log.exception("access-change listener failed for instance %s", change.instance_uid)

    after_commit(session, notify)


def _user(session: Session, username: str) -> User:
    if not isinstance(username, str) or not 0 < len(username) <= 64:
        raise InvalidInput("invalid username", field="username")
    user = session.scalar(select(User).where(User.username == username, User.active.is_(True)))
    if user is None:
        raise NotFound(f"no user {username!r}", field="username")
    return user


def _member(instance: Instance, user: User) -> InstanceMember | None:
    return next((m for m in instance.members if m.user_id == user.id), None)


def _role(value: str | MemberRole, allowed_roles: frozenset[MemberRole]) -> MemberRole:
    try:
        role = MemberRole(str(value).upper())
    except ValueError:
        role = None
    if role not in allowed_roles:
        raise InvalidInput(f"role must be one of {', '.join(sorted(allowed_roles))}", field="role")
    return role


def _owner_is_staff(instance: Instance, now: datetime) -> bool:
    # Staff by a grant here or by the identity provider's claims (as last read at their login or
    # refresh): either way their machine may hold what support must not see unasked.
    owner = instance.owner
    return bool((owner.roles_at(now) | owner.idp_roles_set()) & STAFF_ROLES)


def check_may_act(instance: Instance, role: MemberRole, field: str = "role") -> None:
    """A USER member acts as the owner inside the machine: refused where it runs on the owner's
    home shared by all their machines (``Instance.members_may_act``). GUESTs only watch; support
    staff join such a machine view-only (the policy table gives them no input there)."""
    if role == MemberRole.USER and not instance.members_may_act:
        owner = instance.owner.username
        raise Conflict(
            f"{instance.name} runs on {owner}'s home, which all their machines share: a user acts as {owner} "
            f"inside it, and what they leave in that home would run in {owner}'s other machines. Invite them as "
            "a guest (view only), or create a machine with a home of its own to work on together",
            field=field,
        )


def list_members(actor: Actor, session: Session, instance: Instance) -> list[InstanceMember]:
    require(actor, "instance.members.view", instance)
    order = {MemberRole.OWNER: 0, MemberRole.USER: 1, MemberRole.GUEST: 2, MemberRole.SUPPORT: 3}
    return sorted(instance.members, key=lambda m: (order[m.role], m.user.username))


def add_member(actor: Actor, session: Session, clock: Clock, instance: Instance, username: str,
               role: str | MemberRole, *, settings: Settings | None = None) -> InstanceMember:
    """The owner shares the instance with a user, as USER or GUEST; with ``settings``, the new
    member is told by email (after the commit)."""
    require(actor, "instance.invite", instance)
    wanted = _role(role, SHAREABLE_ROLES)
    check_may_act(instance, wanted)
    user = _user(session, username)
    if user.id == actor.id:
        # Nobody grants themselves access (an admin joins as support, through a request).
        raise Forbidden("you cannot add yourself")
    if _member(instance, user) is not None:
        raise Conflict(f"{username} is already a member: change their role instead", field="username")
    member = InstanceMember(user=user, role=wanted, created_at=clock.now())
    instance.members.append(member)
    session.flush()
    record(actor, session, clock, "instance.member.add", target_type="instance", target_id=instance.uid,
           username=user.username, role=wanted.value)
    if settings is not None:
        enqueue(session, clock, settings, emails.MEMBER_ADDED, member.id)
    return member


def change_role(actor: Actor, session: Session, clock: Clock, instance: Instance, username: str,
                role: str | MemberRole) -> InstanceMember:
    """The owner (or an admin) changes a member's role; raising one to USER is the owner's alone."""
    require(actor, "instance.share", instance)
    wanted = _role(role, SHAREABLE_ROLES)
    if wanted == MemberRole.USER:
        require(actor, "instance.invite", instance)
        check_may_act(instance, wanted)
    user = _user(session, username)
    member = _member(instance, user)
    if member is None:
        raise NotFound(f"{username} is not a member", field="username")
    if member.role in (MemberRole.OWNER, MemberRole.SUPPORT):
        raise Conflict(f"the role of the {member.role.value.lower()} cannot be changed", field="username")
    old = member.role
    if old != wanted:
        member.role = wanted
        record(actor, session, clock, "instance.member.role", target_type="instance", target_id=instance.uid,
               username=user.username, old=old.value, new=wanted.value)
        _publish(session, AccessChange(instance.id, instance.uid, user.id, user.username, wanted))
    return member


def revoke_member(actor: Actor, session: Session, clock: Clock, instance: Instance, username: str) -> None:
    """The owner (or an admin) removes a member, or a member leaves; their desktops close."""
    user = _user(session, username)
    member = _member(instance, user)
    leaving = member is not None and user.id == actor.id
    if not leaving:
        require(actor, "instance.share", instance)
    if member is None:
        raise NotFound(f"{username} is not a member", field="username")
    if member.role == MemberRole.OWNER:
        raise Conflict("the owner cannot be removed", field="username")
    instance.members.remove(member)
    session.delete(member)
    session.execute(
        delete(ConnectToken).where(ConnectToken.instance_id == instance.id, ConnectToken.user_id == user.id)
    )
    session.flush()
    record(actor, session, clock, "instance.member.leave" if leaving else "instance.member.revoke",
           target_type="instance", target_id=instance.uid, username=user.username, role=member.role.value)
    _publish(session, AccessChange(instance.id, instance.uid, user.id, user.username, None))


# --- support access ------------------------------------------------------------------------
def _open_request(session: Session, instance: Instance, user_id: int, now: datetime) -> SupportRequest | None:
    """The requester's latest request on the instance that has not expired."""
    return session.scalar(
        select(SupportRequest)
        .where(SupportRequest.instance_id == instance.id, SupportRequest.requester_id == user_id,
               SupportRequest.expires_at > now)
        .order_by(SupportRequest.created_at.desc(), SupportRequest.id.desc()).limit(1)
    )


def _join_as_support(actor: Actor, session: Session, clock: Clock, instance: Instance, user: User,
                     action: str) -> InstanceMember:
    member = InstanceMember(user=user, role=MemberRole.SUPPORT, created_at=clock.now())
    instance.members.append(member)
    session.flush()
    record(actor, session, clock, action, target_type="instance", target_id=instance.uid, username=user.username)
    return member


def request_support_access(actor: Actor, session: Session, clock: Clock, instance: Instance
                           ) -> InstanceMember | SupportRequest:
    """Support staff ask to join. The owner's open page is prompted (``visa.sharing.support``):
    a staff owner must answer; another owner who is connected is asked first, and joining
    happens at once when they are away or let the prompt time out. Returns the new SUPPORT
    member, or None while the request waits."""
    require(actor, "instance.request_support", instance)
    assert actor.user is not None
    if member_role(actor, instance) is not None:
        raise Conflict("you are already a member of this instance")
    now = clock.now()
    staff_owner = _owner_is_staff(instance, now)
    open_request = _open_request(session, instance, actor.user.id, now)
    if open_request is not None and open_request.state == SupportState.REFUSED and not staff_owner:
        # Their refusal stands for the request's hour, present or not; a staff owner is simply asked again.
        raise Forbidden("the owner refused your request: ask again later", field="uid")
    if open_request is not None and open_request.state == SupportState.PENDING:
        if not staff_owner and open_request.prompt_until <= now:
            open_request.state, open_request.answered_at = SupportState.ACCEPTED, now
            return _join_as_support(actor, session, clock, instance, actor.user, "instance.support.join")
        return open_request
    if not staff_owner and not instance.owner_connected(now):
        return _join_as_support(actor, session, clock, instance, actor.user, "instance.support.join")
    request = SupportRequest(instance_id=instance.id, requester_id=actor.user.id, state=SupportState.PENDING,
                             created_at=now, prompt_until=now + SUPPORT_PROMPT, expires_at=now + SUPPORT_REQUEST_TTL)
    session.add(request)
    session.flush()
    record(actor, session, clock, "instance.support.request", target_type="instance", target_id=instance.uid,
           username=actor.user.username)
    return request


def _pending(session: Session, instance: Instance, now: datetime) -> list[SupportRequest]:
    members = {m.user_id for m in instance.members}
    rows = session.scalars(
        select(SupportRequest)
        .where(SupportRequest.instance_id == instance.id, SupportRequest.state == SupportState.PENDING,
               SupportRequest.expires_at > now)
        .order_by(SupportRequest.created_at, SupportRequest.id)
    )
    return [r for r in rows if r.requester_id not in members]


def pending_support_requests(actor: Actor, session: Session, clock: Clock, instance: Instance) -> list[PendingSupportOut]:
    """Requests of the last hour that are neither answered nor already members."""
    require(actor, "instance.share", instance)
    return [PendingSupportOut(username=r.requester.username, requested_at=r.created_at)
            for r in _pending(session, instance, clock.now())]


def answer_support_request(actor: Actor, session: Session, clock: Clock, instance: Instance, username: str,
                           approve: bool) -> InstanceMember | None:
    """The owner (or an admin) approves or denies a pending support request."""
    require(actor, "instance.share", instance)
    now = clock.now()
    request = next((r for r in _pending(session, instance, now) if r.requester.username == username), None)
    if request is None:
        raise NotFound(f"no pending support request from {username!r}", field="username")
    user = request.requester
    if approve and user.id == actor.id:
        # An administrator may answer for the owner, but not let themselves in: that is the owner's call.
        raise Forbidden("you cannot approve your own support request: the owner decides")
    if approve and not support_allowed(actor_for(user, now), instance):
        raise Forbidden(f"{username} is no longer support staff for this instance")
    request.state = SupportState.ACCEPTED if approve else SupportState.REFUSED
    request.answered_at, request.answered_by_id = now, actor.id
    action = "instance.support.approve" if approve else "instance.support.deny"
    record(actor, session, clock, action, target_type="instance", target_id=instance.uid, username=user.username)
    if not approve:
        session.flush()
        return None
    member = InstanceMember(user=user, role=MemberRole.SUPPORT, created_at=now)
    instance.members.append(member)
    session.flush()
    return member


def connection_allowed(session: Session, instance_id: int, user_id: int, clock: Clock) -> MemberRole | None:
    """The member role under which a user may be connected now (None: disconnect them)."""
    instance = session.get(Instance, instance_id)
    user = session.get(User, user_id)
    if instance is None or instance.deleted_at is not None or user is None or not user.active:
        return None
    actor = actor_for(user, clock.now())
    return member_role(actor, instance) if allowed(actor, "instance.connect", instance) else None
