"""``GET /api/events``: server-sent events for the logged-in user's browser.

Events: ``instance`` (one instance changed state: its dict and progress), ``instances``
(an instance appeared or went away: the new list of uids), ``thumbnail`` (a new desktop
picture). The stream polls the database with one cheap query every ``POLL_SECONDS`` in a
worker thread, so it works across any number of processes without a message broker. It
authenticates with the Flask session cookie, and re-checks it every ``RECHECK_SECONDS``:
a logout elsewhere or a password change ends the stream. Streams end after
``MAX_STREAM_SECONDS``; browsers reconnect on their own (``retry``) and compare the
per-instance versions of the ``ready`` event with what they last saw.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from anyio import to_thread
from flask import Flask
from pydantic import BaseModel
from sqlalchemy import and_, func, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from visa.actor import actor_for
from visa.auth.sessions import session_user
from visa.instances import changes, progress
from visa.instances.models import Instance, InstanceCommand, InstanceMember, InstanceThumbnail
from visa.instances.schemas import InstanceEvent, InstancesEvent, ReadyEvent, ThumbnailEvent
from visa.instances.serialize import instance_out
from visa.services import Services
from visa.users.models import User

log = logging.getLogger(__name__)

POLL_SECONDS = 1.5
HEARTBEAT_SECONDS = 15.0
RECHECK_SECONDS = 30.0
# Short streams, because an open stream holds up a graceful server shutdown until it ends;
# the browser reconnects after RETRY_MS and the "ready" versions tell it what it missed.
MAX_STREAM_SECONDS = 60.0
RETRY_MS = 3000

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
    user_id: int
    epoch: str
    sid: str = ""

    def session_valid(self) -> bool:
        data = {"user_id": self.user_id, "epoch": self.epoch, "sid": self.sid}
        with self.services.database.sessionmaker() as s:
            return session_user(s, data, self.services.clock.now()) is not None

    def snapshot(self) -> Snapshot:
        """The one query per poll: the user's instances with what may have changed on them."""
        last_finished = (
            select(func.max(InstanceCommand.finished_at))
            .where(InstanceCommand.instance_id == Instance.id)
            .correlate(Instance)
            .scalar_subquery()
        )
        stmt = (
            select(Instance.uid, Instance.state, Instance.state_changed_at, last_finished,
                   InstanceThumbnail.updated_at)
            .join(InstanceMember, and_(InstanceMember.instance_id == Instance.id,
                                       InstanceMember.user_id == self.user_id))
            .outerjoin(InstanceThumbnail, InstanceThumbnail.instance_id == Instance.id)
            .where(Instance.deleted_at.is_(None))
        )
        with self.services.database.sessionmaker() as s:
            return {uid: (str(state), changed, finished, thumb) for uid, state, changed, finished, thumb in s.execute(stmt)}

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

    @property
    def services(self) -> Services:
        return self.flask_app.extensions["visa"]  # type: ignore[no-any-return]

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
        stream = UserStream(self.services, *ident)
        if not await to_thread.run_sync(stream.session_valid):
            return JSONResponse({"error": "unauthorized", "message": "log in first"}, status_code=401)
        headers = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
        return StreamingResponse(self.events(stream, request), media_type="text/event-stream", headers=headers)

    async def events(self, stream: UserStream, request: Request) -> AsyncIterator[bytes]:
        started = last_beat = last_check = time.monotonic()
        snap = await to_thread.run_sync(stream.snapshot)
        yield f"retry: {RETRY_MS}\n\n".encode()
        yield sse("ready", ReadyEvent(uids=sorted(snap), versions={u: version(r) for u, r in snap.items()}))
        while time.monotonic() - started < MAX_STREAM_SECONDS:
            await changes.wait(POLL_SECONDS)  # sooner when this process's worker moved one
            if await request.is_disconnected():
                return
            now = time.monotonic()
            if now - last_check >= RECHECK_SECONDS:
                last_check = now
                if not await to_thread.run_sync(stream.session_valid):
                    yield sse("logout")
                    return
            try:
                new = await to_thread.run_sync(stream.snapshot)
            except Exception:  # a database hiccup: try again next poll, keep the stream
                log.warning("event stream poll failed", exc_info=True)
                continue
            list_changed, changed, thumbs = diff(snap, new)
            snap = new
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
            if list_changed or changed or thumbs:
                last_beat = now
            elif now - last_beat >= HEARTBEAT_SECONDS:
                last_beat = now
                yield sse(None, comment="ping")


def event_routes(flask_app: Flask) -> list[BaseRoute]:
    return [Route("/api/events", EventStream(flask_app).endpoint, methods=["GET"])]
