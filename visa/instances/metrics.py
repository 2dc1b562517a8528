"""Metrics of instances read from the database when scraped (registered by the app)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from visa.db import Database
from visa.instances.models import Instance, InstanceState


class InstanceStates(Collector):
    """Instances by state, read from the database when scraped."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("visa_instances", "Instances (not deleted) by state", labels=["state"])
        try:
            with self.database.sessionmaker() as s:
                counts = dict(s.execute(
                    select(Instance.state, func.count(Instance.id))
                    .where(Instance.deleted_at.is_(None)).group_by(Instance.state)
                ).all())
        except Exception:  # a scrape must not fail because the database blinked
            return
        for state in InstanceState:
            if state != InstanceState.DELETED:
                family.add_metric([state.value], counts.get(state, 0))
        yield family
