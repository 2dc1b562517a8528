"""Invitation links: the owner shares an instance by a link instead of a username.

Only the owner makes links (an administrator joins as support instead), and a link counts
only while its maker is the owner and is never redeemed by its maker. A link is single-use,
expires and gives the role chosen (USER or GUEST). Only the hash of its
secret is stored. Redeeming it needs a person logged in through the browser (not a token):
one conditional UPDATE spends it, so two people racing with one link cannot both join. A
link used, expired, revoked or unknown changes nothing and says which.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.audit.service import record
from visa.clock import Clock
from visa.errors import Conflict, Forbidden, NotFound
from visa.instances.models import Instance, InstanceMember, MemberRole
from visa.policy import member_role, require
from visa.settings import Settings
from visa.sharing.models import Invitation
from visa.sharing.schemas import InvitationOut, NewInvitation, RedeemedOut
from visa.sharing.service import check_may_act
from visa.users.models import User


class InvitationUsed(Conflict):
    code = "invitation_used"


class InvitationExpired(Conflict):
    code = "invitation_expired"


def hash_token(token: str) -> str:
    return hashlib.sha256(f"invitation\0{token}".encode()).hexdigest()


def invitation_url(settings: Settings, token: str) -> str:
    return f"{settings.base_url.rstrip('/')}/invite/{token}"


def _out(row: Invitation, session: Session, url: str | None = None) -> InvitationOut:
    used_by = session.get(User, row.used_by_id) if row.used_by_id else None
    return InvitationOut(id=row.id, role=row.role.value, created_at=row.created_at, expires_at=row.expires_at,
                         used_at=row.used_at, used_by=used_by.username if used_by else None, url=url)


def create_invitation(actor: Actor, session: Session, clock: Clock, settings: Settings, instance: Instance,
                      data: NewInvitation) -> InvitationOut:
    """A new link for the instance; the answer is the only place its secret appears. The owner's alone."""
    require(actor, "instance.invite", instance)
    check_may_act(instance, MemberRole(data.role))
    token = secrets.token_urlsafe(24)
    now = clock.now()
    row = Invitation(instance_id=instance.id, token_hash=hash_token(token), role=MemberRole(data.role),
                     created_by_id=actor.id, created_at=now, expires_at=now + timedelta(hours=data.hours))
    session.add(row)
    session.flush()
    record(actor, session, clock, "instance.invitation.create", target_type="instance", target_id=instance.uid,
           invitation=row.id, role=row.role.value, expires_at=row.expires_at.isoformat())
    return _out(row, session, invitation_url(settings, token))


def list_invitations(actor: Actor, session: Session, clock: Clock, instance: Instance) -> list[InvitationOut]:
    """The instance's links still usable, and those used in the last week."""
    require(actor, "instance.share", instance)
    now = clock.now()
    rows = session.scalars(select(Invitation).where(Invitation.instance_id == instance.id)
                           .order_by(Invitation.created_at.desc(), Invitation.id.desc()))
    return [_out(r, session) for r in rows
            if (r.used_at is None and r.expires_at > now) or (r.used_at and r.used_at > now - timedelta(days=7))]


def revoke_invitation(actor: Actor, session: Session, clock: Clock, instance: Instance, invitation_id: int) -> None:
    require(actor, "instance.share", instance)
    row = session.get(Invitation, invitation_id)
    if row is None or row.instance_id != instance.id:
        raise NotFound("no such invitation", field="id")
    if row.used_at is not None:
        raise InvitationUsed("this invitation has been used: remove the member instead", field="id")
    session.delete(row)
    session.flush()
    record(actor, session, clock, "instance.invitation.revoke", target_type="instance", target_id=instance.uid,
           invitation=invitation_id)


def _usable(session: Session, clock: Clock, token: str) -> tuple[Invitation, Instance]:
    row = session.scalar(select(Invitation).where(Invitation.token_hash == hash_token(token))) if token else None
    instance = session.get(Instance, row.instance_id) if row is not None else None
    if row is None or instance is None or instance.deleted_at is not None:
        raise NotFound("this invitation link is not valid: ask for a new one", field="token")
    if row.used_at is not None:
        raise InvitationUsed("this invitation link has already been used: ask for a new one", field="token")
    if row.expires_at <= clock.now():
        raise InvitationExpired("this invitation link has expired: ask for a new one", field="token")
    return row, instance


def _check_joinable(actor: Actor, row: Invitation, instance: Instance) -> None:
    role = member_role(actor, instance)
    if role == MemberRole.OWNER:
        raise Conflict("this is your own instance: send the link to someone else", field="token")
    if row.created_by_id == actor.id:
        raise Forbidden("you made this link: it lets someone else in, never its maker", field="token")
    if row.created_by_id != instance.owner_id:
        # Made by someone other than the owner (an administrator, before only owners could):
        # the owner never consented to it.
        raise Forbidden("this invitation link was not made by the owner: ask them for a new one", field="token")
    if role is not None:
        raise Conflict(f"you are already a member of this instance, as {role.lower()}", field="token")


def peek_invitation(actor: Actor, session: Session, clock: Clock, token: str) -> tuple[Instance, MemberRole]:
    """What a link would give (the redeem page asks before joining); spends nothing."""
    require(actor, "invitation.redeem")
    row, instance = _usable(session, clock, token)
    _check_joinable(actor, row, instance)
    return instance, row.role


def redeem_invitation(actor: Actor, session: Session, clock: Clock, token: str) -> RedeemedOut:
    """Join the instance with the link's role, spending it."""
    require(actor, "invitation.redeem")
    assert actor.user is not None
    row, instance = _usable(session, clock, token)
    _check_joinable(actor, row, instance)
    check_may_act(instance, row.role, field="token")
    now = clock.now()
    spent = session.execute(
        update(Invitation)
        .where(Invitation.id == row.id, Invitation.used_at.is_(None), Invitation.expires_at > now)
        .values(used_at=now, used_by_id=actor.user.id)
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        raise InvitationUsed("this invitation link has already been used: ask for a new one", field="token")
    instance.members.append(InstanceMember(user=actor.user, role=row.role, created_at=now))
    session.flush()
    record(actor, session, clock, "instance.member.join", target_type="instance", target_id=instance.uid,
           username=actor.user.username, role=row.role.value, invitation=row.id)
    return RedeemedOut(uid=instance.uid, name=instance.name, role=row.role.value)
