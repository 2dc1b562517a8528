"""What a running visa holds: settings, database, clock and cloud providers."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from sqlalchemy import select

from visa.clock import Clock, system_clock
from visa.clouds.base import Provider
from visa.clouds.models import Cloud
from visa.clouds.registry import make_provider
from visa.db import Database
from visa.errors import NotFound
from visa.settings import Settings


@dataclass
class Services:
    settings: Settings
    database: Database
    clock: Clock = system_clock
    _providers: dict[str, Provider] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def provider(self, cloud_name: str) -> Provider:
        """The provider of a configured cloud, made once and reused."""
        with self._lock:
            if cloud_name not in self._providers:
                with self.database.sessionmaker() as session:
                    cloud = session.scalar(select(Cloud).where(Cloud.name == cloud_name))
                    if cloud is None:
                        raise NotFound(f"no cloud {cloud_name!r}")
                    self._providers[cloud_name] = make_provider(
                        cloud.kind, cloud.name, dict(cloud.config), self.settings
                    )
            return self._providers[cloud_name]

    def set_provider(self, cloud_name: str, provider: Provider) -> None:
        with self._lock:
            self._providers[cloud_name] = provider

    def close(self) -> None:
        for p in self._providers.values():
            p.close()
        self.database.dispose()
