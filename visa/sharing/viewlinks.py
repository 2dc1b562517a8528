"""Public view-only links: the owner lets someone without an account watch one desktop (a talk's
audience, a remote colleague).

A link is made by the owner alone, lasts a few hours at most and can be revoked at any time; only
the hash of its secret is stored. It opens that desktop view-only and nothing else: no login
session is made for its holder (the page sets no cookie), and the gateway drops every input
message of its connections (keys, pointer, clipboard, resizing), whatever the page sends. A link
counts only while its maker is still the instance's owner and active; an open connection is
closed within the gateway's activity period once the link is revoked, and at its expiry.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.audit.service import record
from visa.clock import Clock
from visa.errors import NotFound, Unauthorized
from visa.instances.models import Instance
from visa.policy import require
from visa.settings import Settings
from visa.sharing.models import ViewLink
from visa.sharing.schemas import NewViewLink, ViewLinkOut
from visa.users.models import User

# Links ended more than this long ago drop out of the owner's list.
LISTED_AFTER_END = timedelta(days=7)


def hash_token(token: str) -> str:
    return hashlib.sha256(f"view-link\0{token}".encode()).hexdigest()


def view_url(settings: Settings, token: str) -> str:
    return f"{settings.base_url.rstrip('/')}/view/{token}"


def _out(row: ViewLink, now: datetime, url: str | None = None) -> ViewLinkOut:
    return ViewLinkOut(id=row.id, label=row.label, created_at=row.created_at, expires_at=row.expires_at,
                       revoked_at=row.revoked_at, active=row.revoked_at is None and row.expires_at > now, url=url)


def create_view_link(actor: Actor, session: Session, clock: Clock, settings: Settings, instance: Instance,
                     data: NewViewLink) -> ViewLinkOut:
    """A new link to the instance's desktop, view only; the answer is the only place its secret appears."""
    require(actor, "instance.view_link", instance)
    token = secrets.token_urlsafe(32)
    now = clock.now()
    row = ViewLink(instance_id=instance.id, token_hash=hash_token(token), label=data.label, created_by_id=actor.id,
                   created_at=now, expires_at=now + timedelta(hours=data.hours))
    session.add(row)
    session.flush()
    record(actor, session, clock, "instance.view_link.create", target_type="instance", target_id=instance.uid,
           link=row.id, label=row.label, expires_at=row.expires_at.isoformat())
    return _out(row, now, view_url(settings, token))


def list_view_links(actor: Actor, session: Session, clock: Clock, instance: Instance) -> list[ViewLinkOut]:
    """The instance's links that still open the desktop, and those that ended in the last week."""
    require(actor, "instance.view_link", instance)
    now = clock.now()
    rows = session.scalars(select(ViewLink).where(ViewLink.instance_id == instance.id)
                           .order_by(ViewLink.created_at.desc(), ViewLink.id.desc()))
    return [_out(r, now) for r in rows if min(r.expires_at, r.revoked_at or r.expires_at) > now - LISTED_AFTER_END]


def revoke_view_link(actor: Actor, session: Session, clock: Clock, instance: Instance, link_id: int) -> ViewLinkOut:
    """End a link now: it opens nothing more, and its open connections close (audited)."""
    require(actor, "instance.view_link", instance)
    row = session.get(ViewLink, link_id)
    if row is None or row.instance_id != instance.id:
        raise NotFound("no such view link", field="id")
    now = clock.now()
    if row.revoked_at is None:
        row.revoked_at = now
        session.flush()
        record(actor, session, clock, "instance.view_link.revoke", target_type="instance", target_id=instance.uid,
               link=row.id)
    return _out(row, now)


@dataclass(frozen=True)
class Viewing:
    """What a link opens: one instance's desktop, view only, until ``expires_at``."""

    link_id: int
    instance: Instance
    label: str
    expires_at: datetime


INVALID = "this view link is not valid any more: ask its owner for a new one"


def _valid(session: Session, now: datetime, row: ViewLink | None) -> Viewing:
    instance = session.get(Instance, row.instance_id) if row is not None else None
    if row is None or instance is None or instance.deleted_at is not None:
        raise Unauthorized(INVALID)
    if row.revoked_at is not None or row.expires_at <= now:
        raise Unauthorized(INVALID)
    # Made by someone who is not the owner now (ownership moved), or an owner no longer active:
    # nobody who may share this desktop stands behind the link.
    owner = session.get(User, instance.owner_id)
    if row.created_by_id != instance.owner_id or owner is None or not owner.active:
        raise Unauthorized(INVALID)
    return Viewing(row.id, instance, row.label, row.expires_at)


def open_view_link(session: Session, clock: Clock, token: str) -> Viewing:
    """What the link ``token`` opens now, or Unauthorized (unknown, revoked, expired, or its
    instance deleted). No actor: the holder has no account, and the link is all they bring."""
    if not token or len(token) > 100:
        raise Unauthorized(INVALID)
    row = session.scalar(select(ViewLink).where(ViewLink.token_hash == hash_token(token)))
    return _valid(session, clock.now(), row)


def view_link_valid(session: Session, clock: Clock, link_id: int) -> datetime | None:
    """The expiry of a link that still opens its desktop, else None (the gateway's re-check)."""
    try:
        return _valid(session, clock.now(), session.get(ViewLink, link_id)).expires_at
    except Unauthorized:
        return None



def purge_view_links(session: Session, clock: Clock) -> int:
    """Delete the links that ended (expired or revoked) longer ago than the owner's list shows them
    (a scheduler job's work); returns how many."""
    before = clock.now() - LISTED_AFTER_END
    result = session.execute(delete(ViewLink).where(or_(ViewLink.expires_at <= before, ViewLink.revoked_at <= before)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
