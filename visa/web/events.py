"""``GET /api/events``: server-sent events for the logged-in user's browser.

Events: ``instance`` (one instance changed state: its dict and progress), ``instances``
(an instance appeared or went away: the new list of uids), ``thumbnail`` (a new desktop
picture), and the kinds features declare as feeds (``visa.instances.changes.feed``: presence,
support prompts; :func:`init_app` gives an app the feeds it serves). On PostgreSQL a stream
reads the database only when told: every commit that changes an instance or a session
notifies (``pg_notify``), one listening connection per process (visa.pubsub) hears it and the
app's event bus (visa.bus, its Services') wakes the streams concerned, which read what they show; an idle stream costs no query, whatever the number of open tabs. On
SQLite (one process) the stream polls with one cheap query every ``POLL_SECONDS`` and is woken
sooner by its own process's commits. It authenticates with the Flask session cookie, and
re-checks it when that user's sessions change (and every ``RECHECK_SECONDS`` when polling,
``LISTEN_RECHECK_SECONDS`` when listening): a logout elsewhere or a password change ends the
stream. Streams end after ``MAX_STREAM_SECONDS`` (polling) or about ``LISTEN_STREAM_SECONDS``
(listening); browsers reconnect on their own (``retry``) and compare the per-instance versions
of the ``ready`` event with what they last saw.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from anyio import to_thread
from flask import Flask
from pydantic import BaseModel
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from visa import pubsub
from visa.actor import actor_for
from visa.auth.sessions import session_user
from visa.bus import Subscription
from visa.commands import progress
from visa.commands.schemas import InstanceEvent
from visa.instances import changes
from visa.instances.models import Instance, InstanceCommand, InstanceMember, InstanceThumbnail
from visa.instances.schemas import InstancesEvent, ReadyEvent, ThumbnailEvent
from visa.instances.serialize import instance_out
from visa.services import Services
from visa.sharing import presence, support  # noqa: F401 (their feeds)
from visa.users.models import User

log = logging.getLogger(__name__)

POLL_SECONDS = 1.5
HEARTBEAT_SECONDS = 15.0
RECHECK_SECONDS = 30.0
# Short streams, because an open stream holds up a graceful server shutdown until it ends;
# the browser reconnects after RETRY_MS and the "ready" versions tell it what it missed.
MAX_STREAM_SECONDS = 60.0
RETRY_MS = 3000
# Listening (PostgreSQL), a stream costs nothing while idle: it may stay open longer (a
# restarting gateway cuts it after uvicorn's short graceful timeout anyway), spread out so
# that reconnections do not come in waves.
LISTEN_STREAM_SECONDS = 900.0
LISTEN_RECHECK_SECONDS = 300.0
LISTEN_WAIT_SECONDS = 2.0

# uid -> (state, state_changed_at, last command finished_at, thumbnail updated_at)
Snapshot = dict[str, tuple[str, datetime | None, datetime | None, datetime | None]]


def sse(event: str | None, data: BaseModel | None = None, *, comment: str | None = None) -> bytes:
    if comment is not None:
        return f": {comment}\n\n".encode()
    lines = [f"event: {event}"] if event else []
    lines += [f"data: {data.model_dump_json() if data is not None else '{}'}"]
    return ("\n".join(lines) + "\n\n").encode()


@dataclass
class UserStream:
    services: Services
    feeds_served: changes.Feeds
    user_id: int
    epoch: str
    sid: str = ""
    instance_ids: frozenset[int] = frozenset()

    def session_valid(self) -> bool:
        data = {"user_id": self.user_id, "epoch": self.epoch, "sid": self.sid}
        with self.services.database.sessionmaker() as s:
            return session_user(s, data, self.services.clock.now()) is not None

    def snapshot(self) -> Snapshot:
        """The one query per poll: the user's instances with what may have changed on them."""
        with self.services.database.sessionmaker() as s:
            snap, self.instance_ids = read_snapshot(s, self.user_id)
        return snap

    def feeds(self) -> dict[tuple[str, str], BaseModel]:
        """What the registered feeds say for this user now (one small query each)."""
        with self.services.database.sessionmaker() as s:
            return changes.read_feeds(self.feeds_served, s, self.user_id, self.services.clock.now())

    def describe(self, uids: list[str]) -> list[InstanceEvent]:
        """The instances that changed, with their progress."""
        with self.services.database.sessionmaker() as s:
            user = s.get(User, self.user_id)
            if user is None:
                return []
            actor = actor_for(user, self.services.clock.now())
            out = []
            for inst in s.scalars(select(Instance).where(Instance.uid.in_(uids))):
                out.append(InstanceEvent(instance=instance_out(inst, actor, self.services.clock),
                                         **progress.progress_of(s, inst)))
            return out


def read_snapshot(s: Session, user_id: int) -> tuple[Snapshot, frozenset[int]]:
    """The user's instances with what may have changed on them, and their ids."""
    last_finished = (
        select(func.max(InstanceCommand.finished_at))
        .where(InstanceCommand.instance_id == Instance.id)
        .correlate(Instance)
        .scalar_subquery()
    )
    stmt = (
        select(Instance.uid, Instance.state, Instance.state_changed_at, last_finished,
               InstanceThumbnail.updated_at, Instance.id)
        .join(InstanceMember, and_(InstanceMember.instance_id == Instance.id, InstanceMember.user_id == user_id))
        .outerjoin(InstanceThumbnail, InstanceThumbnail.instance_id == Instance.id)
        .where(Instance.deleted_at.is_(None))
    )
    rows = s.execute(stmt).all()
    snap = {uid: (str(state), changed, finished, thumb) for uid, state, changed, finished, thumb, _id in rows}
    return snap, frozenset(row[5] for row in rows)


def versions(snap: Snapshot) -> dict[str, str]:
    return {uid: version(row) for uid, row in snap.items()}


def page_versions(s: Session, user_id: int) -> dict[str, str]:
    """The versions a page shows, as the stream's ``ready`` event would tell them: a page
    compares them with the first ``ready``, so a change between the render and the stream's
    first read (a deletion finishing meanwhile) is not missed."""
    return versions(read_snapshot(s, user_id)[0])


def version(row: tuple[str, datetime | None, datetime | None, datetime | None]) -> str:
    """A short tag of what the pages show of an instance (state and progress), to spot changes."""
    state, changed, finished, _thumb = row
    return hashlib.blake2s(f"{state}|{changed}|{finished}".encode(), digest_size=6).hexdigest()


def diff(old: Snapshot, new: Snapshot) -> tuple[bool, list[str], list[str]]:
    """(list changed, uids whose state or progress changed, uids with a new thumbnail)."""
    list_changed = old.keys() != new.keys()
    changed = [u for u in new if u in old and old[u][:3] != new[u][:3]]
    thumbs = [u for u in new if u in old and old[u][3] != new[u][3] and new[u][3] is not None]
    return list_changed, changed, thumbs


class EventStream:
    def __init__(self, flask_app: Flask) -> None:
        self.flask_app = flask_app
        self._listening: bool | None = None

    def members(self, instance_ids: list[int], user_ids: set[int]) -> dict[int, set[int]]:
        """Of the users with a stream here, the members of these instances (one query)."""
        out: dict[int, set[int]] = {}
        with self.services.database.sessionmaker() as s:
            for instance_id, user_id in s.execute(
                select(InstanceMember.instance_id, InstanceMember.user_id)
                .where(InstanceMember.instance_id.in_(instance_ids), InstanceMember.user_id.in_(user_ids))
            ):
                out.setdefault(instance_id, set()).add(user_id)
        return out

    def listening(self) -> bool:
        """Whether this process hears the database's notifications (PostgreSQL), once connected."""
        if self._listening is None:
            self.services.bus.set_resolver(self.members)
            self._listening = self.services.settings.database_notify and self.services.bus.listen(
                self.services.database.url)
        if not self._listening:
            return False
        return pubsub.wait_connected(pubsub.listener(self.services.database.url), LISTEN_WAIT_SECONDS)

    @property
    def services(self) -> Services:
        return self.flask_app.extensions["visa"]  # type: ignore[no-any-return]

    @property
    def feeds(self) -> changes.Feeds:
        return self.flask_app.extensions[FEEDS]  # type: ignore[no-any-return]

    def stream(self, user_id: int, epoch: str, sid: str = "") -> UserStream:
        return UserStream(self.services, self.feeds, user_id, epoch, sid)

    def identify(self, request: Request) -> tuple[int, str, str] | None:
        """(user id, session epoch, session id) from the Flask session cookie, or None."""
        app = self.flask_app
        cookie = request.cookies.get(app.config["SESSION_COOKIE_NAME"])
        if not cookie:
            return None
        serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
        if serializer is None:
            return None
        try:
            data = serializer.loads(cookie, max_age=int(app.permanent_session_lifetime.total_seconds()))
        except Exception:  # bad signature, expired, garbage: anonymous
            return None
        user_id, epoch, sid = data.get("user_id"), data.get("epoch"), data.get("sid")
        if not isinstance(user_id, int) or not isinstance(epoch, str) or not isinstance(sid, str):
            return None
        return user_id, epoch, sid

    async def endpoint(self, request: Request) -> Response:
        ident = self.identify(request)
        if ident is None:
            return JSONResponse({"error": "unauthorized", "message": "log in first"}, status_code=401)
        stream = self.stream(*ident)
        if not await to_thread.run_sync(stream.session_valid):
            return JSONResponse({"error": "unauthorized", "message": "log in first"}, status_code=401)
        headers = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
        return StreamingResponse(self.events(stream, request), media_type="text/event-stream", headers=headers)

    async def events(self, stream: UserStream, request: Request) -> AsyncIterator[bytes]:
        listening = await to_thread.run_sync(self.listening)
        bus = self.services.bus
        sub = bus.subscribe(stream.user_id)  # before the first read: nothing falls in between
        try:
            async for chunk in self._events(stream, sub, request, listening):
                yield chunk
        finally:
            bus.unsubscribe(sub)

    async def _events(self, stream: UserStream, sub: Subscription, request: Request,
                      listening: bool) -> AsyncIterator[bytes]:
        started = last_beat = last_check = time.monotonic()
        if listening:
            lifetime, recheck, wait = LISTEN_STREAM_SECONDS * random.uniform(0.8, 1.0), LISTEN_RECHECK_SECONDS, \
                HEARTBEAT_SECONDS
        else:
            lifetime, recheck, wait = MAX_STREAM_SECONDS, RECHECK_SECONDS, POLL_SECONDS
        snap = await to_thread.run_sync(stream.snapshot)
        sub.instance_ids = stream.instance_ids
        yield f"retry: {RETRY_MS}\n\n".encode()
        yield sse("ready", ReadyEvent(uids=sorted(snap), versions=versions(snap)))
        fed = await to_thread.run_sync(stream.feeds)
        for (name, _uid), model in fed.items():
            yield sse(name, model)
        while time.monotonic() - started < lifetime:
            woken = await sub.wait(wait)  # sooner when a commit concerns this stream
            if await request.is_disconnected():
                return
            now = time.monotonic()
            if sub.session_changed or now - last_check >= recheck:
                sub.session_changed = False
                last_check = now
                if not await to_thread.run_sync(stream.session_valid):
                    yield sse("logout")
                    return
            if listening and not woken:  # nothing happened: no query
                if now - last_beat >= HEARTBEAT_SECONDS:
                    last_beat = now
                    yield sse(None, comment="ping")
                continue
            try:
                new = await to_thread.run_sync(stream.snapshot)
            except Exception:  # a database hiccup: try again next poll, keep the stream
                log.warning("event stream poll failed", exc_info=True)
                if listening:
                    sub.event.set()  # read again at the next turn
                continue
            sub.instance_ids = stream.instance_ids
            list_changed, changed, thumbs = diff(snap, new)
            snap = new
            try:
                fed_now = await to_thread.run_sync(stream.feeds)
            except Exception:
                log.warning("event stream feeds failed", exc_info=True)
                fed_now = fed
            fed_changes = changes.feed_changes(stream.feeds_served, fed, fed_now)
            fed = fed_now
            for name, model in fed_changes:
                yield sse(name, model)
            if list_changed:
                yield sse("instances", InstancesEvent(uids=sorted(new)))
            if changed:
                for item in await to_thread.run_sync(stream.describe, changed):
                    uid = item.instance.uid
                    item.version = version(new[uid]) if uid in new else None
                    yield sse("instance", item)
            for uid in thumbs:
                at = new[uid][3]
                yield sse("thumbnail", ThumbnailEvent(
                    uid=uid, updated_at=at, url=f"/api/instances/{uid}/thumbnail?v={int(at.timestamp()) if at else 0}",
                ))
            if list_changed or changed or thumbs or fed_changes:
                last_beat = now
            elif now - last_beat >= HEARTBEAT_SECONDS:
                last_beat = now
                yield sse(None, comment="ping")


FEEDS = "visa.feeds"


def init_app(app: Flask) -> None:
    """Give the app the feeds its streams serve: every one declared (presence, support)."""
    app.extensions[FEEDS] = changes.declared_feeds()


def event_routes(flask_app: Flask) -> list[BaseRoute]:
    return [Route("/api/events", EventStream(flask_app).endpoint, methods=["GET"])]
