"""The support page's view of instances, and the live prompt on the owner's page.

Asking for access and answering are in ``visa.sharing.service``; here: which instances a
support person may help with (IT support, scientific computing and admins: all; instrument
scientists: those of their instruments' experiments), with filters, and the ``support`` feed
that puts a pending request in front of the owner while its prompt lasts.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.clock import Clock
from visa.errors import InvalidInput
from visa.experiments.models import Experiment, Instrument
from visa.instances import changes
from visa.instances.models import Instance, InstanceState
from visa.paging import escape_like
from visa.policy import STAFF_ROLES, Role, allowed, member_role, require
from visa.sharing.models import SupportRequest, SupportState
from visa.sharing.schemas import SupportInstanceOut, SupportPrompt, SupportPromptEvent, SupportQuery
from visa.users.models import User

# Roles that help on every instance, not only their instruments'.
EVERYWHERE = frozenset({Role.ADMIN, Role.IT_SUPPORT, Role.SCIENTIFIC_COMPUTING})


def support_instances(actor: Actor, session: Session, clock: Clock, query: SupportQuery) -> list[SupportInstanceOut]:
    """The live instances this support person may ask to join, newest first, filtered."""
    require(actor, "support.list")
    assert actor.user is not None
    now = clock.now()
    stmt = (select(Instance).join(User, User.id == Instance.owner_id)
            .where(Instance.deleted_at.is_(None), Instance.owner_id != actor.user.id))
    if not actor.roles & EVERYWHERE:
        mine = Experiment.instrument.has(Instrument.scientists.any(User.id == actor.user.id))
        stmt = stmt.where(Instance.experiments.any(mine))
    if query.q.strip():
        pattern = f"%{escape_like(query.q.strip())}%"
        stmt = stmt.where(or_(Instance.name.ilike(pattern, escape="\\"), Instance.uid.ilike(pattern, escape="\\"),
                              User.username.ilike(pattern, escape="\\"), User.full_name.ilike(pattern, escape="\\")))
    if query.instrument:
        stmt = stmt.where(Instance.experiments.any(Experiment.instrument.has(Instrument.name == query.instrument)))
    if query.state:
        try:
            stmt = stmt.where(Instance.state == InstanceState(query.state.upper()))
        except ValueError:
            raise InvalidInput(f"unknown state {query.state!r}", field="state") from None
    instances = list(session.scalars(stmt.order_by(Instance.created_at.desc(), Instance.id.desc()).limit(query.limit)))
    requests = {
        r.instance_id: r for r in session.scalars(
            select(SupportRequest).where(SupportRequest.requester_id == actor.user.id,
                                         SupportRequest.instance_id.in_([i.id for i in instances]),
                                         SupportRequest.expires_at > now)
            .order_by(SupportRequest.created_at, SupportRequest.id))
    }
    out = []
    for inst in instances:
        if not allowed(actor, "instance.request_support", inst, now=now):  # the table is the gate
            continue
        request = requests.get(inst.id)
        if member_role(actor, inst) is not None:
            access = "member"
        elif request is not None and request.state == SupportState.PENDING:
            access = "pending"
        elif request is not None and request.state == SupportState.REFUSED:
            access = "refused"
        else:
            access = "none"
        out.append(SupportInstanceOut(
            uid=inst.uid, name=inst.name, state=inst.state.value, owner=inst.owner.username,
            owner_name=inst.owner.full_name, instruments=sorted({e.instrument.name for e in inst.experiments}),
            proposals=sorted({e.proposal.identifier for e in inst.experiments}), created_at=inst.created_at,
            access=access,
        ))
    return out


def support_instruments(actor: Actor, session: Session) -> list[str]:
    """The instruments the support page's filter offers."""
    require(actor, "support.list")
    assert actor.user is not None
    stmt = select(Instrument.name)
    if not actor.roles & EVERYWHERE:
        stmt = stmt.where(Instrument.scientists.any(User.id == actor.user.id))
    return list(session.scalars(stmt.order_by(Instrument.name)))


@changes.feed("support", gone=lambda uid: SupportPromptEvent(uid=uid))
def support_feed(session: Session, user_id: int, now: datetime) -> dict[str, SupportPromptEvent]:
    """The ``support`` events: requests on this user's own instances that their page should ask
    about now (until the prompt times out; for a staff owner, until the request expires)."""
    rows = session.execute(
        select(SupportRequest, Instance.uid, Instance.owner_id)
        .join(Instance, Instance.id == SupportRequest.instance_id)
        .where(Instance.owner_id == user_id, Instance.deleted_at.is_(None),
               SupportRequest.state == SupportState.PENDING, SupportRequest.expires_at > now)
        .order_by(SupportRequest.created_at, SupportRequest.id)
    ).all()
    if not rows:
        return {}
    owner = session.get(User, user_id)
    staff = bool(owner is not None and (owner.roles_at(now) | owner.idp_roles_set()) & STAFF_ROLES)
    out: dict[str, SupportPromptEvent] = {}
    for request, uid, _owner_id in rows:
        if not staff and request.prompt_until <= now:
            continue
        user = request.requester
        out.setdefault(uid, SupportPromptEvent(uid=uid)).requests.append(SupportPrompt(
            username=user.username, full_name=user.full_name, roles=sorted(r.value for r in user.roles_at(now)),
            requested_at=request.created_at, prompt_until=request.expires_at if staff else request.prompt_until,
            owner_must_answer=staff,
        ))
    return out
