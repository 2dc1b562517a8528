"""The command worker: runs queued commands at once, and (in one process) follows moving instances.

Every process that may carry out commands runs one (``visa scheduler``, ``visa run``).

* Commands: claimed atomically so none runs twice (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
  visa.commands.executor), each on a thread pool of its cloud with at most
  ``scheduler.command_concurrency`` at once per cloud, so one hung cloud stalls only its own
  commands. The worker wakes when a command is queued: on PostgreSQL every worker hears the
  queuing transaction's ``pg_notify`` (visa.pubsub); in this process the commit wakes it
  (``Services.commands_queued``, set by the database's flush hook: visa.db); a slow poll (``poll_seconds``) is the safety net. While it runs commands it
  beats every ``command_heartbeat_seconds`` (``instance_commands.heartbeat_at``); a command
  whose claimer stopped beating is given to another.
* Following: only the process holding the ``follower`` lease lists clouds to follow unstable
  instances (every ``unstable_sync_seconds``, or closely for ``FOLLOW_SECONDS`` after a command
  finished anywhere), and only the clouds with unstable instances in the database: with N
  processes the list calls stay those of one, and none when nothing moves.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Protocol

from visa import pubsub
from visa.commands.executor import CLAIM_BATCH, claim_pending, heartbeat, release_stale_claims, run_one
from visa.commands.sync import sync_all
from visa.services import Services

log = logging.getLogger(__name__)

# After a command ran (create, start, reboot), the follower follows the moving instances
# closely for a while: a local desktop answers within seconds, and the user is watching.
FOLLOW_SECONDS = 30.0
FOLLOW_INTERVAL = 0.25
FOLLOW = "follow"  # the payload on pubsub.COMMANDS that says a command finished
# Without notifications (SQLite) pending commands are looked for this often; with them, this
# is only the safety net.
POLL_SECONDS, LISTEN_POLL_SECONDS = 2.0, 30.0


class FollowerLease(Protocol):
    """What the worker needs of a lease (visa.scheduler.lease.Lease, named ``follower``)."""

    duration: timedelta

    def acquire(self) -> bool: ...
    def held(self) -> bool: ...
    def release(self) -> None: ...


class Worker:
    def __init__(self, services: Services, *, poll_seconds: float | None = None, sync_seconds: float | None = None,
                 follow_seconds: float = FOLLOW_SECONDS, lease: FollowerLease | None = None) -> None:
        """``lease``: the follower lease, which the processes that run a worker share (the
        callers make it: visa.scheduler.lease). Without one this worker always follows (one
        process, tests)."""
        cfg = services.settings.scheduler
        self.services = services
        self.listening = services.settings.database_notify and pubsub.supported(services.database.url)
        self.poll_seconds = poll_seconds or (LISTEN_POLL_SECONDS if self.listening else POLL_SECONDS)
        self.sync_seconds = sync_seconds or float(cfg.unstable_sync_seconds)
        self.follow_seconds = follow_seconds
        self.concurrency = cfg.command_concurrency
        self.heartbeat_seconds = cfg.command_heartbeat_seconds
        self.lease = lease
        self._lease_checked = float("-inf")
        self._follow_until = 0.0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._running: dict[int, int] = {}  # command id -> cloud id, carried out by this process now
        self._pools: dict[int, ThreadPoolExecutor] = {}
        self._unsubscribe = None

    # --- process life -----------------------------------------------------------------------

    def start(self) -> None:
        if self.listening:
            found = pubsub.listener(self.services.database.url)
            assert found is not None
            self._unsubscribe = found.subscribe(pubsub.COMMANDS, self._heard)
        for target, name in ((self._run, "visa-worker"), (self._beat, "visa-worker-heartbeat")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self.services.commands_queued.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        for thread in self._threads:
            thread.join(timeout)
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        if self.lease is not None:
            try:
                self.lease.release()
            except Exception:
                log.exception("follower lease could not be released")

    def _heard(self, payload: str | None) -> None:
        if payload == FOLLOW:
            self._follow_until = time.monotonic() + self.follow_seconds
        self.services.commands_queued.set()

    def wake(self) -> None:
        """Claim now (a command was queued, or a slot is free)."""
        self.services.commands_queued.set()

    # --- commands ---------------------------------------------------------------------------

    def in_flight(self, cloud_id: int) -> int:
        with self._lock:
            return sum(1 for c in self._running.values() if c == cloud_id)

    def claim(self) -> int:
        """Claim what this process has slots for and hand each command to its cloud's pool."""
        with self._lock:
            per_cloud: dict[int, int] = {}
            for cloud in self._running.values():
                per_cloud[cloud] = per_cloud.get(cloud, 0) + 1
        full = [c for c, n in per_cloud.items() if n >= self.concurrency]
        claimed = claim_pending(self.services, CLAIM_BATCH, free=lambda c: self.concurrency - per_cloud.get(c, 0),
                                full=full)
        for cid, cloud_id in claimed:
            with self._lock:
                self._running[cid] = cloud_id
                pool = self._pools.get(cloud_id)
                if pool is None:
                    pool = self._pools[cloud_id] = ThreadPoolExecutor(self.concurrency,
                                                                      thread_name_prefix=f"visa-cloud-{cloud_id}")
            pool.submit(self._carry_out, cid)
        return len(claimed)

    def _carry_out(self, cid: int) -> None:
        try:
            run_one(self.services, cid)
        finally:
            with self._lock:
                self._running.pop(cid, None)
            self._follow_until = time.monotonic() + self.follow_seconds
            if self.listening:
                self._tell_follower()
            self.services.commands_queued.set()  # a slot is free: claim more

    def _tell_follower(self) -> None:
        try:
            with self.services.database.engine.begin() as conn:
                pubsub.send(conn, pubsub.COMMANDS, FOLLOW)
        except Exception:
            log.warning("could not tell the follower a command finished", exc_info=True)

    def _beat(self) -> None:
        """Beat for this process's commands, and give back those whose claimer stopped beating
        (then claim: this process may take them)."""
        while not self._stop.wait(self.heartbeat_seconds):
            with self._lock:
                ids = list(self._running)
            try:
                if release_stale_claims(self.services):
                    self.services.commands_queued.set()
                ours = heartbeat(self.services, ids)
            except Exception:
                log.warning("command heartbeat failed", exc_info=True)
                continue
            if ours < len(ids):
                log.warning("%d of %d running command(s) were given to another process", len(ids) - ours, len(ids))

    # --- following --------------------------------------------------------------------------

    def follows(self) -> bool:
        """Whether this process is the follower (the lease is renewed every third of its length)."""
        if self.lease is None:
            return True
        now = time.monotonic()
        if now - self._lease_checked >= self.lease.duration.total_seconds() / 3:
            self._lease_checked = now
            try:
                self.lease.acquire()
            except Exception:
                log.warning("follower lease not renewed", exc_info=True)
        return self.lease.held()

    def run_once(self) -> None:
        self.claim()
        if self.follows():
            sync_all(self.services, only_unstable=True)

    def interval(self, now: float) -> tuple[float, float]:
        """(wait for a command, time between syncs): short while following closely, else the usual."""
        if now < self._follow_until:
            return FOLLOW_INTERVAL, FOLLOW_INTERVAL
        return min(self.poll_seconds, self.sync_seconds), self.sync_seconds

    def _run(self) -> None:
        last_sync = 0.0
        last_claim = float("-inf")
        while not self._stop.is_set():
            woken = self.services.commands_queued.wait(self.interval(time.monotonic())[0])
            self.services.commands_queued.clear()
            if self._stop.is_set():
                break
            try:
                now = time.monotonic()
                if woken or now - last_claim >= self.poll_seconds:
                    last_claim = now
                    self.claim()
                if time.monotonic() - last_sync >= self.interval(time.monotonic())[1] and self.follows():
                    last_sync = time.monotonic()
                    sync_all(self.services, only_unstable=True)
            except Exception:  # keep going: the next cycle may succeed
                log.exception("worker cycle failed")
