"""What a running visa holds: settings, database, clock, cloud providers, and its event bus.

Everything a running visa changes as it runs is here, never in a module: two Services (two
apps in one process, each on its own database) share nothing. Its event bus hears what its
database's transactions changed (visa.db, visa.bus).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from visa.bus import EventBus
from visa.clock import Clock, system_clock
from visa.clouds.base import Provider
from visa.clouds.models import Cloud
from visa.clouds.registry import make_provider, provider_class
from visa.db import QUEUED, Database
from visa.errors import NotFound
from visa.settings import Settings

# A provider replaced by a new configuration is closed this long after (a call under way on it
# ends by then: calls are bounded by the scheduler's cloud_call_seconds and the request timeout).
RETIRE_GRACE_SECONDS = 600.0


def config_key(kind: str, config: dict[str, Any]) -> str:
    """What a provider is made from, as a key: another kind or configuration, or a file it reads
    (a clouds.yaml) changed, another provider."""
    files: list[tuple[str, int | None, int | None, int | None]] = []
    for path in provider_class(kind).config_files(config):
        try:
            stat = os.stat(path)
            files.append((path, stat.st_mtime_ns, stat.st_size, stat.st_ino))
        except OSError:
            files.append((path, None, None, None))
    text = json.dumps({"kind": kind, "config": config, "files": files}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Services:
    settings: Settings
    database: Database
    clock: Clock = system_clock
    # cloud name -> (configuration key, provider)
    _providers: dict[str, tuple[str, Provider]] = field(default_factory=dict)
    # Providers set by hand (tests, embedding code): used whatever the database says.
    _pinned: dict[str, Provider] = field(default_factory=dict)
    _retired: list[tuple[float, Provider]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    bus: EventBus = field(default_factory=EventBus)
    # Set when one of this database's commits queued a command: this process's command worker
    # (visa.commands.worker) waits on it.
    commands_queued: threading.Event = field(default_factory=threading.Event)
    # How warm machines' assignment helper is reached ((machine, document) -> ok?); None: over
    # SSH (visa.instances.helper.SshHelper). A cloud with no machines to log in to is given another.
    warm_channel: Callable[[Any, dict[str, Any]], bool] | None = None
    _unhook: Callable[[], None] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._unhook = self.database.on_commit(self._committed)

    def _committed(self, keys: str) -> None:
        self.bus.dispatch(keys)
        if QUEUED in keys.split(","):
            self.commands_queued.set()

    def provider(self, cloud_name: str) -> Provider:
        """The provider of a configured cloud, reused while its kind and configuration stay the
        same: a cloud registered again (a rotated secret) gets a new one at its next use, in
        every process, and the old one is closed once calls under way on it are over."""
        pinned = self._pinned.get(cloud_name)
        if pinned is not None:
            return pinned
        with self.database.sessionmaker() as session:
            row = session.execute(select(Cloud.kind, Cloud.config).where(Cloud.name == cloud_name)).first()
        if row is None:
            raise NotFound(f"no cloud {cloud_name!r}")
        kind, config = row[0], dict(row[1] or {})
        key = config_key(kind, config)
        with self._lock:
            self._close_retired()
            held = self._providers.get(cloud_name)
            if held is not None and held[0] == key:
                return held[1]
            provider = make_provider(kind, cloud_name, config, self.settings)
            self._providers[cloud_name] = (key, provider)
            if held is not None:
                self._retired.append((time.monotonic(), held[1]))
            return provider

    def _close_retired(self) -> None:
        now = time.monotonic()
        due = [p for at, p in self._retired if now - at >= RETIRE_GRACE_SECONDS]
        self._retired = [(at, p) for at, p in self._retired if now - at < RETIRE_GRACE_SECONDS]
        for provider in due:
            provider.close()

    def set_provider(self, cloud_name: str, provider: Provider) -> None:
        with self._lock:
            self._pinned[cloud_name] = provider

    def close(self) -> None:
        self._unhook()
        self.bus.close()
        with self._lock:
            providers = [p for _, p in self._providers.values()] + list(self._pinned.values())
            providers += [p for _, p in self._retired]
            self._providers, self._pinned, self._retired = {}, {}, []
        for p in providers:
            p.close()
        self.database.dispose()
