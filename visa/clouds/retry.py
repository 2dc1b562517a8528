"""The one place cloud calls are retried: transient failures only, with jittered backoff, and a
deadline per call, so that a command holds its cloud slot for a bounded time however the cloud
fails. Providers make one try per method; their callers (the executor, the sync) wrap the call.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from visa.errors import CloudError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``deadline``: seconds from the first try after which no try starts (a try under way is
    bounded by the provider's own request timeout); ``first_delay``, doubled after each failure
    up to ``max_delay``, is the most a wait lasts (each is drawn between half of it and all of it,
    so that processes which failed together do not come back together)."""

    deadline: float = 60.0
    first_delay: float = 0.5
    max_delay: float = 10.0

    def run(self, call: Callable[[], T], *, what: str = "cloud call",
            sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic) -> T:
        """``call()``, tried again on transient :class:`CloudError` until it succeeds, fails for good,
        or the next try would start after the deadline: then the last error is raised, its
        ``details`` saying how many tries were made."""
        started = monotonic()
        ceiling = self.first_delay
        attempt = 0
        while True:
            attempt += 1
            try:
                return call()
            except CloudError as exc:
                if not exc.transient:
                    raise
                wait = random.uniform(ceiling / 2, ceiling)
                left = self.deadline - (monotonic() - started)
                if wait >= left:
                    exc.details["attempts"] = attempt
                    log.warning("%s: giving up after %d tries in %.1f s: %s", what, attempt,
                                monotonic() - started, exc.message)
                    raise
                log.warning("%s: transient failure (try %d), again in %.1f s: %s", what, attempt, wait, exc.message)
                sleep(wait)
                ceiling = min(ceiling * 2, self.max_delay)
