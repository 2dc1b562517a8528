"""PostgreSQL LISTEN/NOTIFY: one listening connection per process, fanned out in the process.

Writers send ``pg_notify`` inside their transaction (:func:`send`), which PostgreSQL delivers
only once it commits, with a small payload (ids): the receivers read what they need. Each
process that wants notifications holds one :class:`Listener` (:func:`listener`): a psycopg 3
connection in autocommit, on a thread of its own, LISTENing on every visa channel, that calls
the callbacks subscribed to a channel. When the connection is lost it reconnects (with a
backoff) and calls every callback with ``None``: "you may have missed some, read it all
again". SQLite has no notifications: :func:`supported` says so, and callers poll there.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

log = logging.getLogger(__name__)

EVENTS = "visa_events"  # an instance or a user's session changed: payload "i<id>,u<id>,..." or "*"
COMMANDS = "visa_commands"  # "c": a command was queued (visa.db.QUEUED); "follow": one finished
CHANNELS = (EVENTS, COMMANDS)
PAYLOAD_LIMIT = 7000  # PostgreSQL's limit is 8000 bytes

Callback = Callable[[str | None], None]


def supported(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def send(connection: Connection, channel: str, payload: str) -> None:
    """Queue a notification in the connection's transaction (delivered at its commit, or never)."""
    connection.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload})


def chunks(keys: list[str], limit: int = PAYLOAD_LIMIT) -> list[str]:
    """Comma-joined payloads each under ``limit`` bytes."""
    out: list[str] = []
    current = ""
    for key in keys:
        if current and len(current) + 1 + len(key) > limit:
            out.append(current)
            current = ""
        current = f"{current},{key}" if current else key
    if current:
        out.append(current)
    return out


class Listener:
    """One LISTEN connection for this process, on its own thread."""

    def __init__(self, url: str, *, backoff: float = 0.5, max_backoff: float = 10.0) -> None:
        self.conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.backoff, self.max_backoff = backoff, max_backoff
        self._callbacks: dict[str, list[Callback]] = {c: [] for c in CHANNELS}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.connections = 0  # how many times it (re)connected
        self._conn = None
        self._thread: threading.Thread | None = None

    def subscribe(self, channel: str, callback: Callback) -> Callable[[], None]:
        with self._lock:
            self._callbacks[channel].append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks[channel]:
                    self._callbacks[channel].remove(callback)

        return unsubscribe

    def start(self) -> Listener:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="visa-listen", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def interrupt(self) -> None:
        """Close the connection under the listener (what a lost connection does; for tests)."""
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):  # already gone
                conn.pgconn.finish()

    def _dispatch(self, channel: str, payload: str | None) -> None:
        with self._lock:
            callbacks = list(self._callbacks.get(channel, ()))
        for callback in callbacks:
            try:
                callback(payload)
            except Exception:
                log.exception("notification callback on %s failed", channel)

    def _run(self) -> None:
        import psycopg

        delay = self.backoff
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                    self._conn = conn
                    for channel in CHANNELS:
                        conn.execute(f"LISTEN {channel}")
                    self.connections += 1
                    self.connected.set()
                    delay = self.backoff
                    if self.connections > 1:  # what was sent while away is lost: read it all again
                        log.info("notification listener reconnected")
                        for channel in CHANNELS:
                            self._dispatch(channel, None)
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._dispatch(note.channel, note.payload)
            except Exception as exc:
                self.connected.clear()
                self._conn = None
                if self._stop.is_set():
                    break
                log.warning("notification listener lost its connection (%s); again in %.1f s", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.max_backoff)
        self.connected.clear()
        self._conn = None


_listeners: dict[str, Listener] = {}
_listeners_lock = threading.Lock()


def listener(url: str) -> Listener | None:
    """This process's listener for a database (started on first use); None on SQLite."""
    if not supported(url):
        return None
    with _listeners_lock:
        found = _listeners.get(url)
        if found is None:
            found = _listeners[url] = Listener(url).start()
    return found


def close_listener(url: str) -> None:
    """Stop this process's listener for a database, if it has one (a database about to go away)."""
    with _listeners_lock:
        found = _listeners.pop(url, None)
    if found is not None:
        found.stop()


def wait_connected(found: Listener | None, timeout: float = 5.0) -> bool:
    if found is None:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found.connected.wait(0.1):
            return True
    return False
