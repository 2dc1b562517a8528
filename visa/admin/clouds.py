"""Asking each configured cloud how it is, with a short timeout and a short cache.

Readiness probes and the dashboard both ask; a slow or broken cloud must not make either
slow, and a load balancer polling every second must not turn into a cloud API storm.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from sqlalchemy import select

from visa.clouds.base import CloudLimits
from visa.clouds.models import Cloud
from visa.services import Services

CACHE_SECONDS = 5.0
TIMEOUT_SECONDS = 2.0

# A cloud call that hangs past its timeout keeps its thread; the cache limits how many pile up.
_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="cloud-probe")
_lock = threading.Lock()
_cache: dict[tuple[int, str], tuple[float, CloudStatus]] = {}


@dataclass(frozen=True)
class CloudStatus:
    name: str
    kind: str
    enabled: bool
    ok: bool
    message: str | None
    limits: CloudLimits | None
    # Sessions on visa's own machine: whether they are isolated, and how or why not.
    isolated: bool | None = None
    isolation: str | None = None

    @property
    def status(self) -> str:
        if not self.enabled:
            return "disabled"
        return "ok" if self.ok else "unavailable"


def _probe(services: Services, cloud: Cloud) -> CloudStatus:
    try:
        provider = services.provider(cloud.name)
        limits = provider.limits()
        isolation = provider.isolation()
    except Exception as exc:  # a probe reports, it does not raise
        return CloudStatus(cloud.name, cloud.kind, True, False, str(exc)[:200] or type(exc).__name__, None)
    isolated, how = isolation if isolation is not None else (None, None)
    return CloudStatus(cloud.name, cloud.kind, True, True, None, limits, isolated, how)


def cloud_statuses(
    services: Services, *, timeout: float = TIMEOUT_SECONDS, max_age: float = CACHE_SECONDS
) -> list[CloudStatus]:
    """Every configured cloud's status, each answer reused for ``max_age`` seconds."""
    with services.database.sessionmaker() as s:
        clouds = list(s.scalars(select(Cloud).order_by(Cloud.name)))
        s.expunge_all()
    now = time.monotonic()
    out: list[CloudStatus] = []
    pending = []
    for cloud in clouds:
        key = (id(services), cloud.name)
        with _lock:
            hit = _cache.get(key)
        if hit and now - hit[0] < max_age:
            out.append(hit[1])
        else:
            pending.append(cloud)
    # Clouds are asked in parallel, so N slow clouds cost one timeout, not N.
    futures = [(c, _pool.submit(_probe, services, c) if c.enabled else None) for c in pending]
    deadline = time.monotonic() + timeout
    for cloud, fut in futures:
        if fut is None:
            status = CloudStatus(cloud.name, cloud.kind, False, True, None, None)
        else:
            try:
                status = fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                status = CloudStatus(cloud.name, cloud.kind, True, False, f"no answer within {timeout:g} s", None)
        with _lock:
            _cache[(id(services), cloud.name)] = (time.monotonic(), status)
        out.append(status)
    return sorted(out, key=lambda c: c.name)


def clear_cache() -> None:
    with _lock:
        _cache.clear()
