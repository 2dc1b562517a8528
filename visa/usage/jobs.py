"""The usage job: one sample of what is in use, and the pruning of samples past their keep."""

from __future__ import annotations

import logging
from datetime import timedelta

from visa.services import Services
from visa.usage.service import prune, take_sample

log = logging.getLogger(__name__)


def run(services: Services) -> int:
    """Sample now and prune; returns how many rows the sample wrote."""
    cfg = services.settings.scheduler
    with services.database.unit_of_work() as s:
        written = len(take_sample(s, services.clock))
        pruned = prune(s, services.clock, timedelta(days=cfg.usage_keep_days))
    log.info("usage sampled: %d rows, %d pruned", written, pruned)
    return written
