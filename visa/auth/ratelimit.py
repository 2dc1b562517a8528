"""In-process sliding-window rate limits for logins and token endpoints.

Each key (e.g. ``("login", ip, username)``) keeps the times of its recent hits; a hit is
refused once ``limit`` hits fall within ``window`` seconds. Memory is bounded: at most
``max_keys`` keys are kept, the least recently used dropped first.

Several processes (``visa run --workers N`` or replicas behind nginx) each keep their own
windows, so a client spread over N processes gets up to N x limit. The design keeps that
bound without a database (a DB-backed limiter would turn a password spray into write load):
- route each client to one process: nginx ``hash $binary_remote_addr consistent;`` in the
  upstream block makes every process see all of an IP's attempts, so the in-process
  limit is exact per IP+username;
- and put a coarse per-IP limit in front of all processes: nginx
  ``limit_req_zone $binary_remote_addr zone=visa_login:10m rate=30r/m;`` applied to
  ``/login``, ``/api/login``, ``/auth/callback`` and ``/api/tokens``.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable

from visa.errors import RateLimited


class SlidingWindow:
    def __init__(self, limit: int, window: float, now: Callable[[], float], max_keys: int = 50_000) -> None:
        self.limit = limit
        self.window = window
        self._now = now
        self._max_keys = max_keys
        self._hits: OrderedDict[Hashable, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: Hashable, now: float) -> deque[float]:
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
            while len(self._hits) > self._max_keys:
                self._hits.popitem(last=False)
        self._hits.move_to_end(key)
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return hits

    def retry_after(self, key: Hashable) -> float:
        """Seconds until one more hit would be allowed (0: allowed now)."""
        with self._lock:
            now = self._now()
            hits = self._recent(key, now)
            if len(hits) < self.limit:
                return 0.0
            return max(0.0, hits[0] + self.window - now)

    def check(self, key: Hashable, what: str = "attempts") -> None:
        """Raise RateLimited if the key is over its limit (does not count a hit)."""
        wait = self.retry_after(key)
        if wait > 0:
            raise RateLimited(
                f"too many {what}: try again in {math.ceil(wait)} s", retry_after=math.ceil(wait)
            )

    def hit(self, key: Hashable) -> None:
        with self._lock:
            now = self._now()
            self._recent(key, now).append(now)

    def reset(self, key: Hashable) -> None:
        with self._lock:
            self._hits.pop(key, None)
