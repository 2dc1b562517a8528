"""An event bus: what wakes a running visa's event streams when something they show changed.

Each :class:`visa.services.Services` owns one. Its database's session hooks (visa.db) hand it
the keys a committed transaction changed (``i<instance id>``, ``u<user id>``, ``*``); on
PostgreSQL the process's listener (visa.pubsub) hands it those of every process too
(:meth:`EventBus.listen`). :meth:`EventBus.dispatch` wakes only the streams concerned: those
of the instances' members (one query per notification, through the resolver the web app sets,
whatever the number of streams) and those of the users whose sessions changed. Two buses (two
apps in one process, each on its own database) never hear each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from visa import pubsub


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


# (instance ids, user ids with an open stream here) -> {instance id: its members among them}
Resolver = Callable[[list[int], set[int]], Mapping[int, set[int]]]


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: set[Subscription] = set()
        self._resolver: Resolver | None = None
        self._unlisten: Callable[[], None] | None = None

    def subscribe(self, user_id: int) -> Subscription:
        sub = Subscription(user_id, asyncio.get_running_loop())
        with self._lock:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    def set_resolver(self, resolver: Resolver) -> None:
        """How this bus finds the members of changed instances (the web app's event streams set it)."""
        self._resolver = resolver

    def open_streams(self) -> int:
        return len(self._subs)

    def notify(self) -> None:
        """Wake every stream to read everything again."""
        self.dispatch("*")

    def dispatch(self, payload: str | None) -> None:
        """Wake the streams a notification concerns (callable from any thread). ``None`` or ``*``:
        all of them (the listener reconnected: what it missed is unknown)."""
        with self._lock:
            subs = list(self._subs)
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
        if self._resolver is not None:
            try:
                for ids in self._resolver(instances, {s.user_id for s in subs}).values():
                    members |= ids
            except Exception:  # the database away: wake them all rather than miss one
                members = {s.user_id for s in subs}
        for sub in subs:
            if sub not in woken and sub.user_id in members:
                sub.wake()

    def listen(self, url: str) -> bool:
        """Hear every process's changes through this process's listener (PostgreSQL); False on SQLite."""
        found = pubsub.listener(url)
        if found is None:
            return False
        with self._lock:
            if self._unlisten is None:
                self._unlisten = found.subscribe(pubsub.EVENTS, self.dispatch)
        return True

    def close(self) -> None:
        with self._lock:
            unlisten, self._unlisten = self._unlisten, None
        if unlisten is not None:
            unlisten()
