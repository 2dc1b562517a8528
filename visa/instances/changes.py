"""What tells this process's event streams that something they show changed, and feeds.

Every transaction that changes an instance (its state, commands, thumbnail, members,
connections, support requests) or a user's login sessions says so when it commits: a
session hook collects the ids (``i<instance id>``, ``u<user id>``) at each flush and, on
PostgreSQL, sends them with ``pg_notify`` inside the transaction (delivered at the commit,
to every process: visa.pubsub); they are also dispatched in this process after the commit
(SQLite has no notifications). :func:`dispatch` wakes only the streams concerned: those of the instances' members
(one query per notification for the whole process, whatever the number of streams) and
those of the users whose sessions changed. Features add kinds of event to the streams as
feeds (below).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from visa import pubsub

_lock = threading.Lock()


@dataclass(eq=False)
class Subscription:
    """One open event stream: whose it is, what it shows, and the event that wakes it."""

    user_id: int
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)
    instance_ids: frozenset[int] = frozenset()
    session_changed: bool = False

    def wake(self, *, session: bool = False) -> None:
        if session:
            self.session_changed = True
        with contextlib.suppress(RuntimeError):  # its loop is closed
            self.loop.call_soon_threadsafe(self.event.set)

    async def wait(self, timeout: float) -> bool:
        """Sleep ``timeout`` seconds, or less when woken; True when woken."""
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except TimeoutError:
            return False
        self.event.clear()
        return True


_subs: set[Subscription] = set()
# (instance ids, user ids with an open stream here) -> {instance id: its members among them}
Resolver = Callable[[list[int], set[int]], Mapping[int, set[int]]]
_resolver: Resolver | None = None


def subscribe(user_id: int) -> Subscription:
    sub = Subscription(user_id, asyncio.get_running_loop())
    with _lock:
        _subs.add(sub)
    return sub


def unsubscribe(sub: Subscription) -> None:
    with _lock:
        _subs.discard(sub)


def set_resolver(resolver: Resolver) -> None:
    """How this process finds the members of changed instances (visa.web.events sets it)."""
    global _resolver
    _resolver = resolver


def open_streams() -> int:
    return len(_subs)


def notify() -> None:
    """Wake every stream of this process to read everything again."""
    dispatch("*")


def dispatch(payload: str | None) -> None:
    """Wake the streams a notification concerns (callable from any thread). ``None`` or ``*``:
    all of them (the listener reconnected: what it missed is unknown)."""
    with _lock:
        subs = list(_subs)
    if not subs:
        return
    keys = (payload or "*").split(",")
    if "*" in keys:
        for sub in subs:
            sub.wake(session=True)
        return
    users = {int(k[1:]) for k in keys if k.startswith("u") and k[1:].isdigit()}
    instances = [int(k[1:]) for k in keys if k.startswith("i") and k[1:].isdigit()]
    woken: set[Subscription] = set()
    for sub in subs:
        if sub.user_id in users:
            sub.wake(session=True)
            woken.add(sub)
    if not instances:
        return
    wanted = set(instances)
    for sub in subs:
        if sub not in woken and sub.instance_ids & wanted:
            sub.wake()
            woken.add(sub)
    members: set[int] = set()
    if _resolver is not None:
        try:
            for ids in _resolver(instances, {s.user_id for s in subs}).values():
                members |= ids
        except Exception:  # the database away: wake them all rather than miss one
            members = {s.user_id for s in subs}
    for sub in subs:
        if sub not in woken and sub.user_id in members:
            sub.wake()


# --- the session hook: what a transaction changed ------------------------------------------
# Instance attributes the streams show (its other columns change often and show nowhere live).
SHOWN = ("state", "state_changed_at", "deleted_at", "owner_id", "name", "error_message")
KEYS = "visa_changed_keys"


def _keys(session: Session) -> set[str]:
    from visa.instances.models import Instance
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
            instance_id = getattr(obj, "instance_id", None)
            if isinstance(instance_id, int) and type(obj).__module__.startswith("visa.instances"):
                keys.add(f"i{instance_id}")
    return keys


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _context: object) -> None:
    keys = _keys(session)
    if not keys:
        return
    if session.get_bind().dialect.name == "postgresql":
        connection = session.connection()
        for payload in pubsub.chunks(sorted(keys)):
            pubsub.send(connection, pubsub.EVENTS, payload)
    # This process's streams hear it at once too (and without a listener: SQLite, tests).
    session.info.setdefault(KEYS, set()).update(keys)


def publish_all(session: Session) -> None:
    """Tell every stream to read everything again at this transaction's commit (a bulk change)."""
    if session.get_bind().dialect.name == "postgresql":
        pubsub.send(session.connection(), pubsub.EVENTS, "*")
    session.info.setdefault(KEYS, set()).add("*")


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    keys = session.info.pop(KEYS, None)
    if keys:
        dispatch(",".join(sorted(keys)))


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(KEYS, None)


_listening: set[str] = set()


def listen(url: str) -> bool:
    """Have this process's listener feed :func:`dispatch` (PostgreSQL); False on SQLite."""
    found = pubsub.listener(url)
    if found is None:
        return False
    with _lock:
        if url not in _listening:
            found.subscribe(pubsub.EVENTS, dispatch)
            _listening.add(url)
    return True


# --- feeds: more kinds of event for the users' streams --------------------------------------
# A feed answers, for one user, one small model per instance uid it has something to say about;
# the stream (``visa.web.events``) sends ``event: <name>`` with a model whenever it differs from
# what that stream sent last (a uid that drops out is sent once as the feed's ``gone(uid)``).
# Features register their feeds here, so the stream loop knows none of them.
Feed = Callable[[Session, int, datetime], Mapping[str, BaseModel]]


@dataclass(frozen=True)
class FeedSpec:
    name: str
    read: Feed
    gone: Callable[[str], BaseModel]


FEEDS: dict[str, FeedSpec] = {}


def feed(name: str, gone: Callable[[str], BaseModel]) -> Callable[[Feed], Feed]:
    """Register ``fn(session, user_id, now) -> {uid: model}`` as the event kind ``name``."""

    def register(fn: Feed) -> Feed:
        FEEDS[name] = FeedSpec(name, fn, gone)
        return fn

    return register


def read_feeds(session: Session, user_id: int, now: datetime) -> dict[tuple[str, str], BaseModel]:
    """Every feed's current models for a user, keyed by (event name, uid)."""
    out: dict[tuple[str, str], BaseModel] = {}
    for spec in FEEDS.values():
        for uid, model in spec.read(session, user_id, now).items():
            out[(spec.name, uid)] = model
    return out


def feed_changes(old: dict[tuple[str, str], BaseModel], new: dict[tuple[str, str], BaseModel]
                 ) -> list[tuple[str, BaseModel]]:
    """What to send, as (event name, model): new or changed models, then ``gone`` for those dropped."""
    out = [(name, m) for (name, uid), m in new.items()
           if (name, uid) not in old or old[(name, uid)].model_dump_json() != m.model_dump_json()]
    out += [(name, FEEDS[name].gone(uid)) for (name, uid) in old if (name, uid) not in new and name in FEEDS]
    return out
