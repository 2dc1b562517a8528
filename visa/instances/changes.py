"""What a transaction changed, for the users' event streams, and feeds.

Every transaction that changes an instance (its state, commands, thumbnail, members,
connections, support requests) or a user's login sessions says so when it commits:
:func:`changed` (declared to visa.db, whose hooks run it at each flush of a visa database's
sessions) names the ids (``i<instance id>``, ``u<user id>``); the database sends them to its
event buses (visa.bus). Features add kinds of event to the streams as feeds (below).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import inspect
from sqlalchemy.orm import Session

from visa.db import QUEUED, change_keys

# --- the session hook: what a transaction changed ------------------------------------------
# Instance attributes the streams show (its other columns change often and show nowhere live).
SHOWN = ("state", "state_changed_at", "deleted_at", "owner_id", "name", "error_message")
# The packages whose rows with an ``instance_id`` are part of what an instance's page shows.
INSTANCE_ROWS = ("visa.instances.", "visa.sharing.")


@change_keys
def changed(session: Session) -> set[str]:
    """What a flush changed that streams show: ``i<instance id>``, ``u<user id>``; and
    :data:`visa.db.QUEUED` for a new command (a command row is only a row: this wakes the workers)."""
    from visa.instances.models import Instance, InstanceCommand
    from visa.users.models import LoginSession, User

    keys: set[str] = set()
    for obj in itertools.chain(session.new, session.dirty, session.deleted):
        if isinstance(obj, Instance):
            if obj in session.dirty and not any(inspect(obj).attrs[a].history.has_changes() for a in SHOWN):
                continue
            if obj.id is not None:
                keys.add(f"i{obj.id}")
        elif isinstance(obj, LoginSession):
            if obj not in session.new and obj.user_id is not None:
                keys.add(f"u{obj.user_id}")
        elif isinstance(obj, User):
            if obj not in session.new and obj.id is not None:
                keys.add(f"u{obj.id}")
        else:
            if isinstance(obj, InstanceCommand) and obj in session.new:
                keys.add(QUEUED)
            instance_id = getattr(obj, "instance_id", None)
            if isinstance(instance_id, int) and type(obj).__module__.startswith(INSTANCE_ROWS):
                keys.add(f"i{instance_id}")
    return keys


# --- feeds: more kinds of event for the users' streams --------------------------------------
# A feed answers, for one user, one small model per instance uid it has something to say about;
# the stream (``visa.web.events``) sends ``event: <name>`` with a model whenever it differs from
# what that stream sent last (a uid that drops out is sent once as the feed's ``gone(uid)``).
# Features declare their feeds here (a list fixed at import); each app takes the feeds it
# serves from it (visa.web.events.init_app), so the stream loop knows none of them.
Feed = Callable[[Session, int, datetime], Mapping[str, BaseModel]]


@dataclass(frozen=True)
class FeedSpec:
    name: str
    read: Feed
    gone: Callable[[str], BaseModel]


DECLARED: list[FeedSpec] = []
Feeds = Mapping[str, FeedSpec]


def feed(name: str, gone: Callable[[str], BaseModel]) -> Callable[[Feed], Feed]:
    """Declare ``fn(session, user_id, now) -> {uid: model}`` as the event kind ``name``."""

    def declare(fn: Feed) -> Feed:
        DECLARED.append(FeedSpec(name, fn, gone))
        return fn

    return declare


def declared_feeds() -> dict[str, FeedSpec]:
    """The feeds declared so far, by event name (a later declaration of a name wins)."""
    return {spec.name: spec for spec in DECLARED}


def read_feeds(feeds: Feeds, session: Session, user_id: int, now: datetime) -> dict[tuple[str, str], BaseModel]:
    """Every feed's current models for a user, keyed by (event name, uid)."""
    out: dict[tuple[str, str], BaseModel] = {}
    for spec in feeds.values():
        for uid, model in spec.read(session, user_id, now).items():
            out[(spec.name, uid)] = model
    return out


def feed_changes(feeds: Feeds, old: dict[tuple[str, str], BaseModel], new: dict[tuple[str, str], BaseModel]
                 ) -> list[tuple[str, BaseModel]]:
    """What to send, as (event name, model): new or changed models, then ``gone`` for those dropped."""
    out = [(name, m) for (name, uid), m in new.items()
           if (name, uid) not in old or old[(name, uid)].model_dump_json() != m.model_dump_json()]
    out += [(name, feeds[name].gone(uid)) for (name, uid) in old if (name, uid) not in new and name in feeds]
    return out
