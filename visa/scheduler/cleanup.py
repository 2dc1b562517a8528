"""Daily clean-up: orphan servers, expired role grants, used and expired connect tokens, view links
ended more than a week ago.

Orphans are servers tagged as visa's that no live instance knows (see
``visa.clouds.reconcile``): they are reported at once and deleted once older than
``scheduler.orphan_grace_hours`` (their creation time as the cloud gives it, else when this
process first saw them: after a restart the grace starts again, which errs on the safe side).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from visa.auth.sessions import purge_expired_sessions
from visa.clouds.models import Cloud
from visa.clouds.reconcile import reconcile
from visa.errors import CloudError
from visa.gateway.service import purge_connect_tokens
from visa.instances.models import Instance, WarmMachine
from visa.services import Services
from visa.sharing.viewlinks import purge_view_links
from visa.users.service import purge_expired_grants

log = logging.getLogger(__name__)


@dataclass
class CleanupResult:
    grants: int = 0
    tokens: int = 0
    sessions: int = 0  # login sessions past their lifetime
    view_links: int = 0  # view links ended more than a week ago
    orphans: dict[str, list[str]] = field(default_factory=dict)  # cloud -> orphan server ids seen
    removed: dict[str, list[str]] = field(default_factory=dict)  # cloud -> server ids deleted


class Cleanup:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.first_seen: dict[tuple[str, str], datetime] = {}

    def run(self) -> CleanupResult:
        result = CleanupResult()
        with self.services.database.unit_of_work() as s:
            result.grants = purge_expired_grants(s, self.services.clock)
            result.tokens = purge_connect_tokens(s, self.services.clock)
            result.sessions = purge_expired_sessions(s)
            result.view_links = purge_view_links(s, self.services.clock)
            clouds = list(s.scalars(select(Cloud.name).where(Cloud.enabled.is_(True))))
        for name in clouds:
            try:
                self.orphans(name, result)
            except CloudError as exc:
                log.warning("orphan check of cloud %s skipped: %s", name, exc.message)
        if result.grants or result.tokens or result.orphans:
            log.info("clean-up: %d expired grants, %d connect tokens, orphans %s, removed %s",
                     result.grants, result.tokens, result.orphans, result.removed)
        return result

    def orphans(self, cloud_name: str, result: CleanupResult) -> None:
        provider = self.services.provider(cloud_name)
        servers = provider.list_servers()
        # Read what visa knows only after listing: anything created before the list is in it.
        with self.services.database.sessionmaker() as s:
            rows = list(s.execute(
                select(Instance.cloud_server_id, Instance.uid).join(Cloud, Cloud.id == Instance.cloud_id)
                .where(Cloud.name == cloud_name, Instance.deleted_at.is_(None))
            ).all())
            # A warm pool's machines are visa's too (visa.instances.warm), before and after they are taken.
            rows += s.execute(
                select(WarmMachine.cloud_server_id, WarmMachine.uid).join(Cloud, Cloud.id == WarmMachine.cloud_id)
                .where(Cloud.name == cloud_name)
            ).all()
        found = reconcile(servers, [r[0] for r in rows if r[0]], known_uids=[r[1] for r in rows])
        now = self.services.clock.now()
        grace = timedelta(hours=self.services.settings.scheduler.orphan_grace_hours)
        live = set()
        for server in found.orphans:
            key = (cloud_name, server.id)
            live.add(key)
            born = server.created_at or self.first_seen.setdefault(key, now)
            result.orphans.setdefault(cloud_name, []).append(server.id)
            if now - born < grace:
                log.warning("cloud %s: server %s (%s) is unknown to visa; deleted after %s if still unknown",
                            cloud_name, server.id, server.name, born + grace)
                continue
            try:
                provider.delete(server.id)
            except CloudError as exc:
                log.warning("cloud %s: orphan %s not deleted: %s", cloud_name, server.id, exc.message)
                continue
            log.warning("cloud %s: orphan server %s (%s) deleted", cloud_name, server.id, server.name)
            result.removed.setdefault(cloud_name, []).append(server.id)
            self.first_seen.pop(key, None)
        for key in [k for k in self.first_seen if k[0] == cloud_name and k not in live]:
            del self.first_seen[key]
