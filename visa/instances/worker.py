"""The in-process worker: runs queued commands at once and follows instances that are moving.

Every visa process may run one; commands are claimed atomically so none runs twice. The
scheduler's periodic jobs (full sync, lifecycle, clean-up) are separate and run on the
leader only. A service that queues a command wakes the worker after its commit.
"""

from __future__ import annotations

import logging
import threading
import time

from visa.instances.executor import run_pending_commands
from visa.instances.sync import sync_all
from visa.services import Services

log = logging.getLogger(__name__)

commands_queued = threading.Event()
# After it ran a command (create, start, reboot), the worker follows the moving instances
# closely for a while: a local desktop answers within seconds, and the user is watching.
FOLLOW_SECONDS = 30.0
FOLLOW_INTERVAL = 0.25


def wake() -> None:
    commands_queued.set()


class Worker:
    def __init__(self, services: Services, *, poll_seconds: float = 2.0, sync_seconds: float | None = None,
                 follow_seconds: float = FOLLOW_SECONDS) -> None:
        self.services = services
        self.poll_seconds = poll_seconds
        self.sync_seconds = sync_seconds or float(services.settings.scheduler.unstable_sync_seconds)
        self.follow_seconds = follow_seconds
        self._follow_until = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="visa-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        commands_queued.set()
        if self._thread:
            self._thread.join(timeout)

    def run_once(self) -> None:
        run_pending_commands(self.services)
        sync_all(self.services, only_unstable=True)

    def interval(self, now: float) -> tuple[float, float]:
        """(wait for a command, time between syncs): short while following, else the usual."""
        if now < self._follow_until:
            return FOLLOW_INTERVAL, FOLLOW_INTERVAL
        return self.poll_seconds, self.sync_seconds

    def _run(self) -> None:
        last_sync = 0.0
        while not self._stop.is_set():
            commands_queued.wait(self.interval(time.monotonic())[0])
            commands_queued.clear()
            if self._stop.is_set():
                break
            try:
                if run_pending_commands(self.services):
                    self._follow_until = time.monotonic() + self.follow_seconds
                if time.monotonic() - last_sync >= self.interval(time.monotonic())[1]:
                    last_sync = time.monotonic()
                    sync_all(self.services, only_unstable=True)
            except Exception:  # keep going: the next cycle may succeed
                log.exception("worker cycle failed")
