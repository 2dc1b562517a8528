"""Prometheus metrics, served at ``/metrics``.

Counters and histograms live in the process-wide registry; any part of visa may import and
update them:

* ``REAPER_ACTIONS.labels(action="delete"|"warn", reason="lifetime"|"inactivity").inc()``
  (the scheduler's lifecycle job);
* ``RelayMeter(kind)`` around a gateway relay (``kind`` "desktop" or "jupyter"): the open
  connections gauge, the connections counter and the bytes relayed each way;
* ``observe_active(instance, now)`` when an instance first becomes ACTIVE (the state sync);
* ``SYNC_DURATION.labels(cloud=...).observe(seconds)`` per sync cycle; ``CLOUD_LIST_CALLS`` per listing
  (the follower asks none while nothing is unstable).

Instances by state are counted from the database at scrape time (one GROUP BY query), so
every replica reports the same truth without keeping state. Several worker processes: set
``PROMETHEUS_MULTIPROC_DIR`` (see docs/operations.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from visa.instances.models import Instance

REQUESTS = Counter("visa_http_requests_total", "HTTP requests", ["endpoint", "method", "status"])
REQUEST_SECONDS = Histogram(
    "visa_http_request_duration_seconds", "HTTP request duration", ["endpoint", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TIME_TO_ACTIVE = Histogram(
    "visa_instance_time_to_active_seconds", "From creation to first ACTIVE",
    buckets=(10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200),
)
SYNC_DURATION = Histogram(
    "visa_sync_duration_seconds", "One state-sync cycle of one cloud", ["cloud"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CLOUD_LIST_CALLS = Counter(
    "visa_cloud_list_calls_total", "Server listings asked of a cloud (full syncs and the follower's)", ["cloud"]
)
REAPER_ACTIONS = Counter(
    "visa_reaper_actions_total", "Lifecycle actions of the scheduler", ["action", "reason"]
)
GATEWAY_CONNECTIONS = Gauge(
    "visa_gateway_connections", "Open gateway connections", ["kind"], multiprocess_mode="livesum"
)
GATEWAY_CONNECTIONS_TOTAL = Counter("visa_gateway_connections_opened_total", "Gateway connections opened", ["kind"])
GATEWAY_BYTES = Counter("visa_gateway_bytes_total", "Bytes relayed by the gateway", ["kind", "direction"])
# Every known label value exported at 0 from the start: increase() then sees the first event, and
# a scrape shows every series the dashboard and the alerts name (Prometheus's advice for labels).
for _action in ("warn", "delete"):
    for _reason in ("lifetime", "inactivity"):
        REAPER_ACTIONS.labels(action=_action, reason=_reason)
for _kind in ("desktop", "jupyter"):
    GATEWAY_CONNECTIONS.labels(kind=_kind)
    GATEWAY_CONNECTIONS_TOTAL.labels(kind=_kind)
    for _direction in ("to_client", "to_server"):
        GATEWAY_BYTES.labels(kind=_kind, direction=_direction)

FIRST_ACTIVE_KEY = "first_active_at"


class RelayMeter:
    """One gateway connection, metered: open while inside ``with``, bytes added up as they pass.

    The relay adds to two plain integers per message; the counters are updated by ``flush``
    (at the end, and periodically by the relay's watcher), off the per-message path.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.to_client = 0
        self.to_server = 0

    def __enter__(self) -> RelayMeter:
        GATEWAY_CONNECTIONS_TOTAL.labels(kind=self.kind).inc()
        GATEWAY_CONNECTIONS.labels(kind=self.kind).inc()
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
        GATEWAY_CONNECTIONS.labels(kind=self.kind).dec()

    def flush(self) -> None:
        to_client, to_server, self.to_client, self.to_server = self.to_client, self.to_server, 0, 0
        if to_client:
            GATEWAY_BYTES.labels(kind=self.kind, direction="to_client").inc(to_client)
        if to_server:
            GATEWAY_BYTES.labels(kind=self.kind, direction="to_server").inc(to_server)


def observe_active(instance: Instance, now: datetime) -> None:
    """Record time-to-ACTIVE once per instance, at its first ACTIVE, measured from creation.

    The mark is kept in the instance's ``provider_state`` (same transaction as the state
    change), so restarts, reboots and other processes never count an instance twice.
    """
    state = dict(instance.provider_state or {})
    if FIRST_ACTIVE_KEY in state:
        return
    state[FIRST_ACTIVE_KEY] = now.isoformat()
    instance.provider_state = state
    elapsed = (now - instance.created_at).total_seconds()
    if 0 <= elapsed < 24 * 3600:  # older ones predate the mark: not a first start
        TIME_TO_ACTIVE.observe(elapsed)


def _endpoint() -> str:
    # The URL rule, not the path: bounded label values whatever users send.
    rule = request.url_rule
    return rule.rule if rule is not None else "<unmatched>"


def install(app: Flask, collectors: Iterable[Collector] = ()) -> None:
    """Count requests and serve ``/metrics``, with ``collectors`` read at scrape time (the
    features' own: this module sits below them and imports none)."""
    scrape = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        scrape.register(collector)

    @app.before_request
    def _start() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        started = g.pop("metrics_started", None)
        if started is not None and request.path != "/metrics":
            endpoint = _endpoint()
            REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
            REQUEST_SECONDS.labels(endpoint, request.method).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        body = process_metrics() + generate_latest(scrape)
        return Response(body, mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                        headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})


def process_metrics() -> bytes:
    """This process's counters (all workers' with ``PROMETHEUS_MULTIPROC_DIR``)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry: Any = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
