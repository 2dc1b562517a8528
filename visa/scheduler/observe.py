"""What an operator sees of ``visa scheduler``: ``/metrics`` and ``/health`` on a port of its
own (``scheduler.metrics_host``/``metrics_port``), and the job metrics the runner updates.

Metrics (deploy/prometheus/visa-alerts.yml alerts on them):

* ``visa_scheduler_leader{holder}``: 1 in the process that leads, 0 in the others;
* ``visa_scheduler_lease_held``: 1 when the lease row names a holder whose lease has not
  expired, read from the database at scrape time, so every process reports the same truth;
* ``visa_scheduler_job_last_success_timestamp_seconds{task}``, ``..._job_duration_seconds{task}``
  (the last successful run) and ``visa_scheduler_job_failures_total{task}``. The job's name is
  the label ``task``, not ``job``: Prometheus sets ``job`` to the scrape job's name and would
  rename ours ``exported_job``;
* ``visa_sync_failures_total{cloud}``: sync cycles whose cloud did not answer;
* ``visa_outbox_backlog``: emails decided but not sent yet (read at scrape time).

``/health`` answers 200 while the election loop runs and the database answers, 503 otherwise.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text

if TYPE_CHECKING:
    from visa.services import Services

log = logging.getLogger(__name__)

LEADER = Gauge("visa_scheduler_leader", "1 when this scheduler process leads", ["holder"])
JOB_LAST_SUCCESS = Gauge(
    "visa_scheduler_job_last_success_timestamp_seconds", "End of the last successful run of a job", ["task"]
)
JOB_DURATION = Gauge("visa_scheduler_job_duration_seconds", "Duration of the last successful run of a job", ["task"])
JOB_FAILURES = Counter("visa_scheduler_job_failures_total", "Runs of a job that failed", ["task"])
SYNC_FAILURES = Counter("visa_sync_failures_total", "Sync cycles of a cloud that got no answer", ["cloud"])


def jobs_known(jobs: list[str]) -> None:
    """Export each job's failure counter at 0 from the start, so that ``increase()`` sees the
    first failure and the dashboard finds every job."""
    for job in jobs:
        JOB_FAILURES.labels(task=job)


def job_succeeded(job: str, seconds: float) -> None:
    JOB_DURATION.labels(task=job).set(seconds)
    JOB_LAST_SUCCESS.labels(task=job).set(time.time())


def job_failed(job: str) -> None:
    JOB_FAILURES.labels(task=job).inc()


class SchedulerState(Collector):
    """The lease and the outbox, read from the database when scraped."""

    def __init__(self, services: Services, lease_name: str = "scheduler") -> None:
        self.services, self.lease_name = services, lease_name

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from visa.mail.models import SentEmail
        from visa.scheduler.models import SchedulerLease

        try:
            with self.services.database.sessionmaker() as s:
                row = s.get(SchedulerLease, self.lease_name)
                backlog = s.scalar(select(func.count(SentEmail.id)).where(SentEmail.sent_at.is_(None)))
        except Exception:  # a scrape must not fail because the database blinked
            return
        held = row is not None and row.expires_at > datetime.now(UTC)
        lease = GaugeMetricFamily("visa_scheduler_lease_held", "1 when a scheduler holds an unexpired lease")
        lease.add_metric([], 1 if held else 0)
        yield lease
        outbox = GaugeMetricFamily("visa_outbox_backlog", "Emails decided but not sent yet")
        outbox.add_metric([], backlog or 0)
        yield outbox


def registries(services: Services) -> tuple[CollectorRegistry, CollectorRegistry]:
    """The process's own metrics and the database-read ones (kept apart: tests read both)."""
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(SchedulerState(services))
    return REGISTRY, scrape


class MetricsServer:
    """A small HTTP server in a thread: GET /metrics and GET /health, nothing else."""

    def __init__(self, services: Services, alive: Callable[[], bool], host: str, port: int) -> None:
        own, scrape = registries(services)
        database = services.database

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(own) + generate_latest(scrape))
                elif self.path == "/health":
                    status, body = 200, {"status": "ok", "role": "scheduler"}
                    if not alive():
                        status, body = 503, {"status": "unavailable", "problem": "the election loop stopped"}
                    else:
                        try:
                            with database.engine.connect() as conn:
                                conn.execute(text("SELECT 1"))
                        except Exception as exc:  # a health probe reports, it does not raise
                            status, body = 503, {"status": "unavailable", "database": str(exc)[:200]}
                    self._send(status, "application/json", json.dumps(body).encode())
                else:
                    self._send(404, "application/json", b'{"error": "not_found"}')

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:  # scrapes every 15 s: not worth a line
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="visa-scheduler-metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("scheduler metrics on port %d", self.port)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
