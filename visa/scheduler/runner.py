"""The scheduler: periodic jobs, run by whichever visa process holds the leader lease.

Every process that may lead runs a :class:`Runner`: it tries to take the lease every
``lease_seconds / 3``; while it holds it, an APScheduler ``BackgroundScheduler`` runs the
jobs (each with its period from ``settings.scheduler``); when it loses it, the jobs stop.

Jobs:

* ``sync`` — the state of every instance from one list call per cloud (``commands.sync``);
  instances in moving states are followed faster by the command worker, or here
  (``sync-unstable``) when this process has no worker.
* ``activity`` — the SSH activity probe of running machines (``instances.activity``).
* ``lifecycle`` — warnings and deletions (``instances.lifecycle``), fenced by the lease.
* ``outbox`` — emails not sent yet (a crash between a decision and its email).
* ``cleanup`` — orphan servers, expired role grants and connect tokens (``scheduler.cleanup``).
* ``usage`` — samples of what instances hold (``usage.jobs``).
* ``experiments-import`` — the user office's export from ``experiments.import_source``, when set
  (``experiments.jobs``).
* ``network`` — the network rules' security groups on running servers (``network.jobs``).
* ``warm`` — the plans' warm pools: failed machines deleted, missing ones started (``instances.warm``).

``visa scheduler`` runs a Runner (and a command worker) on its own, with ``/metrics`` and
``/health`` on ``scheduler.metrics_port`` (``scheduler.observe``); ``visa run`` runs one in the
served process when ``scheduler.enabled_in_web``: see :func:`start_in_background`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

import visa.bookings.emails  # the kinds of email the outbox sends
import visa.instances.emails
import visa.models  # noqa: F401  (every model mapped before the first query)
from visa.scheduler import observe
from visa.scheduler.lease import Lease, LeaseLost
from visa.services import Services

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Job:
    name: str
    seconds: int
    run: Callable[[], object]


class Runner:
    def __init__(self, services: Services, *, worker: bool = False, unstable_sync: bool | None = None,
                 lease: Lease | None = None) -> None:
        self.services = services
        cfg = services.settings.scheduler
        self.lease = lease or Lease(services.database, services.clock, cfg.lease_seconds)
        self.poll_seconds = cfg.lease_seconds / 3
        self.with_worker = worker
        self.unstable_sync = worker is False if unstable_sync is None else unstable_sync
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._scheduler: BackgroundScheduler | None = None
        self._worker = None
        self._jobs: list[Job] | None = None

    # --- the jobs ---------------------------------------------------------------------------

    def jobs(self) -> list[Job]:
        if self._jobs is None:
            from visa.commands.sync import sync_all
            from visa.experiments import jobs as experiments
            from visa.instances import lifecycle, warm
            from visa.instances.activity import ActivityProbe
            from visa.mail.outbox import deliver
            from visa.network import jobs as network
            from visa.scheduler.cleanup import Cleanup
            from visa.usage import jobs as usage

            svc, cfg = self.services, self.services.settings.scheduler
            probe, cleanup = ActivityProbe(svc), Cleanup(svc)
            jobs = [
                Job("sync", cfg.sync_seconds, lambda: _sync_counted(svc, sync_all)),
                Job("activity", cfg.activity_seconds, probe.run),
                Job("lifecycle", cfg.lifecycle_seconds, lambda: lifecycle.run(svc, guard=self.lease.check)),
                Job("outbox", cfg.outbox_seconds, lambda: deliver(svc.database.sessionmaker, svc.settings, svc.clock)),
                Job("cleanup", cfg.cleanup_seconds, cleanup.run),
                Job("usage", cfg.usage_seconds, lambda: usage.run(svc)),
                Job("network", svc.settings.network.rules_seconds, lambda: network.run(svc)),
                Job("warm", cfg.warm_seconds, lambda: warm.run(svc)),
            ]
            if svc.settings.experiments.import_source is not None:
                jobs.append(Job("experiments-import", svc.settings.experiments.import_seconds,
                                lambda: experiments.run(svc)))
            if self.unstable_sync:
                jobs.insert(1, Job("sync-unstable", cfg.unstable_sync_seconds,
                                   lambda: sync_all(svc, only_unstable=True)))
            self._jobs = jobs
        return self._jobs

    def _guarded(self, job: Job) -> Callable[[], None]:
        def run() -> None:
            if not self.lease.held():
                log.info("job %s skipped: this process does not hold the lease", job.name)
                return
            started = time.perf_counter()
            try:
                job.run()
            except LeaseLost as exc:
                log.warning("job %s stopped: %s", job.name, exc)
            except Exception:  # one failed cycle must not stop the scheduler
                observe.job_failed(job.name)
                log.exception("job %s failed", job.name)
            else:
                observe.job_succeeded(job.name, time.perf_counter() - started)

        return run

    # --- leading --------------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        return self._scheduler is not None

    def _lead(self) -> None:
        scheduler = BackgroundScheduler(timezone=UTC, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": None,
        })
        now = datetime.now(UTC)
        observe.jobs_known([job.name for job in self.jobs()])
        for job in self.jobs():
            scheduler.add_job(self._guarded(job), "interval", seconds=job.seconds, id=job.name, name=job.name,
                              next_run_time=now)
        scheduler.start()
        self._scheduler = scheduler
        observe.LEADER.labels(holder=self.lease.holder).set(1)
        log.info("scheduler: %s leads (%s)", self.lease.holder, ", ".join(f"{j.name}/{j.seconds}s" for j in self.jobs()))

    def _follow(self, wait: bool = False) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=wait)
            self._scheduler = None
            log.info("scheduler: %s no longer leads", self.lease.holder)
        observe.LEADER.labels(holder=self.lease.holder).set(0)

    def tick(self) -> bool:
        """One round of the election; True when this process leads afterwards."""
        try:
            holds = self.lease.acquire()
        except Exception:  # the database may be away for a while: stop acting, try again
            log.exception("scheduler lease could not be renewed")
            holds = False
        if holds and not self.leading:
            self._lead()
        elif not holds and self.leading:
            self._follow()
        return holds

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.poll_seconds)

    # --- process life -----------------------------------------------------------------------

    def start(self) -> Runner:
        if self.with_worker:
            from visa.commands.worker import Worker
            from visa.scheduler.lease import follower_lease

            svc = self.services
            self._worker = Worker(svc, lease=follower_lease(svc.database, svc.clock, svc.settings.scheduler.lease_seconds))
            self._worker.start()
        self._thread = threading.Thread(target=self._loop, name="visa-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._follow(wait=True)
        try:
            self.lease.release()
        except Exception:
            log.exception("scheduler lease could not be released")
        if self._worker is not None:
            self._worker.stop()

    @property
    def alive(self) -> bool:
        """Whether the election loop runs (what ``/health`` reports)."""
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def run_forever(self) -> None:
        """Until SIGTERM or SIGINT (``visa scheduler``)."""
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
        cfg = self.services.settings.scheduler
        server = None
        if cfg.metrics_port:
            try:
                server = observe.MetricsServer(self.services, lambda: self.alive, cfg.metrics_host,
                                               cfg.metrics_port).start()
            except OSError as exc:  # the jobs matter more than their metrics: run, and say so
                log.error("scheduler metrics not served on %s:%d: %s (set scheduler.metrics_port apart "
                          "for each scheduler on a host, or 0)", cfg.metrics_host, cfg.metrics_port, exc)
        self.start()
        log.info("scheduler process %s started", self.lease.holder)
        try:
            while not done.wait(1):
                pass
        finally:
            self.stop()
            if server is not None:
                server.stop()


def _sync_counted(services: Services, sync_all: Callable[[Services], list]) -> None:
    """The state sync, counting the clouds that did not answer (sync_all goes on past them)."""
    from sqlalchemy import select

    from visa.clouds.models import Cloud

    results = sync_all(services)
    with services.database.sessionmaker() as s:
        enabled = set(s.scalars(select(Cloud.name).where(Cloud.enabled.is_(True))))
    answered = {r.cloud for r in results}
    for name in sorted(enabled):  # every cloud's counter exported, at 0 until it fails
        counter = observe.SYNC_FAILURES.labels(cloud=name)
        if name not in answered:
            counter.inc()


def start_in_background(services: Services) -> Runner:
    """For the served process (``visa.asgi`` lifespan), which runs its own command worker."""
    return Runner(services, worker=False, unstable_sync=False).start()
