"""Leader election through a lease row: exactly one process runs the scheduler's jobs.

The lease is one ``scheduler_lease`` row (holder, expiry), taken or renewed by a
conditional UPDATE (``holder = me OR expires_at < now``), so on PostgreSQL and SQLite alike
two processes can never both hold it. The leader renews it every ``lease_seconds / 3``;
when the leader dies the row expires and another process takes it within
``lease_seconds`` plus one poll. A leader that cannot renew (database gone, process
paused) stops running jobs before its lease can have expired (``held`` keeps a margin),
and jobs that decide also check the row in their own transaction (``check``).

Clocks of the nodes must agree to well under ``lease_seconds`` (NTP).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from visa.clock import Clock
from visa.db import Database
from visa.scheduler.models import SchedulerLease

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """This process no longer leads: the job must not go on."""


def make_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    def __init__(self, database: Database, clock: Clock, seconds: int, *, name: str = "scheduler",
                 holder: str | None = None) -> None:
        self.database, self.clock, self.name = database, clock, name
        self.duration = timedelta(seconds=seconds)
        self.holder = holder or make_holder()
        self._valid_until: datetime | None = None

    def acquire(self) -> bool:
        """Take the lease if free or expired, or renew it if ours. True when we hold it."""
        now = self.clock.now()
        until = now + self.duration
        try:
            with self.database.unit_of_work() as s:
                taken = s.execute(
                    update(SchedulerLease)
                    .where(SchedulerLease.name == self.name,
                           or_(SchedulerLease.holder == self.holder, SchedulerLease.expires_at < now))
                    .values(holder=self.holder, expires_at=until),
                    execution_options={"synchronize_session": False},
                ).rowcount  # type: ignore[attr-defined]
                if not taken:
                    if s.scalar(select(SchedulerLease.name).where(SchedulerLease.name == self.name)) is not None:
                        self._valid_until = None
                        return False
                    s.add(SchedulerLease(name=self.name, holder=self.holder, expires_at=until, acquired_at=now))
        except IntegrityError:  # another process inserted the row first
            self._valid_until = None
            return False
        if self._valid_until is None:
            with self.database.unit_of_work() as s:
                s.execute(update(SchedulerLease).where(SchedulerLease.name == self.name,
                                                       SchedulerLease.holder == self.holder)
                          .values(acquired_at=now), execution_options={"synchronize_session": False})
            log.info("scheduler lease taken by %s", self.holder)
        self._valid_until = until
        return True

    def held(self) -> bool:
        """Whether we may still act: our lease is valid for at least a third of its length."""
        return self._valid_until is not None and self.clock.now() < self._valid_until - self.duration / 3

    def check(self, session: Session) -> None:
        """Raise LeaseLost unless the row, read in the caller's transaction, is still ours."""
        row = session.get(SchedulerLease, self.name, populate_existing=True)
        if row is None or row.holder != self.holder or row.expires_at <= self.clock.now():
            self._valid_until = None
            raise LeaseLost(f"lease {self.name!r} is no longer held by {self.holder}")

    def release(self) -> None:
        """Hand over at once (on a clean stop)."""
        if self._valid_until is None:
            return
        self._valid_until = None
        with self.database.unit_of_work() as s:
            s.execute(update(SchedulerLease)
                      .where(SchedulerLease.name == self.name, SchedulerLease.holder == self.holder)
                      .values(expires_at=self.clock.now() - timedelta(seconds=1)),
                      execution_options={"synchronize_session": False})
        log.info("scheduler lease released by %s", self.holder)


def follower_lease(database: Database, clock: Clock, seconds: int, *, holder: str | None = None) -> Lease:
    """The lease of the one process that follows unstable instances (visa.commands.worker)."""
    return Lease(database, clock, seconds, name="follower", holder=holder)
