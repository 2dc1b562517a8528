"""The network job: running servers gain and lose the network rules' security groups as roles,
memberships and beamtime windows change (every ``network.rules_seconds``).

Per cloud: one list of its servers (Nova's details name each server's groups), then one call per
group to add or take off; every change is written to the audit log (``instance.network.add`` /
``instance.network.remove``, with the group and the rules that give it). A cloud without security
groups (the local cloud) is reported, never changed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select

from visa.actor import SYSTEM
from visa.audit.service import record
from visa.clouds.models import Cloud
from visa.errors import CloudError
from visa.instances.models import Instance
from visa.network.service import LIVE_STATES, STATE_KEY, Change, all_rules, changes_for
from visa.services import Services

log = logging.getLogger(__name__)


@dataclass
class NetworkResult:
    applied: list[Change] = field(default_factory=list)
    failed: list[tuple[Change, str]] = field(default_factory=list)
    # Clouds with no security groups -> instances whose rules were not applied there.
    unsupported: dict[str, list[str]] = field(default_factory=dict)
    skipped_clouds: dict[str, str] = field(default_factory=dict)  # cloud -> why (it did not answer)


def run(services: Services) -> NetworkResult:
    result = NetworkResult()
    with services.database.sessionmaker() as s:
        clouds = list(s.scalars(select(Cloud.name).where(Cloud.enabled.is_(True)).order_by(Cloud.name)))
        rules_exist = bool(all_rules(s))
    for cloud in clouds:
        try:
            _run_cloud(services, cloud, result, rules_exist)
        except CloudError as exc:
            result.skipped_clouds[cloud] = exc.message
            log.warning("network rules on cloud %s skipped: %s", cloud, exc.message)
    if result.applied or result.failed:
        log.info("network rules: %d groups changed, %d failed", len(result.applied), len(result.failed))
    return result


def _run_cloud(services: Services, cloud: str, result: NetworkResult, rules_exist: bool) -> None:
    provider = services.provider(cloud)
    keep = set(provider.config.get("security_groups") or [])
    if services.settings.network.base_group:
        keep.add(services.settings.network.base_group)
    with services.database.sessionmaker() as s:
        instances = list(s.scalars(
            select(Instance).join(Cloud, Cloud.id == Instance.cloud_id)
            .where(Cloud.name == cloud, Instance.deleted_at.is_(None), Instance.cloud_server_id.is_not(None),
                   Instance.state.in_(LIVE_STATES))
            .order_by(Instance.id)
        ))
        # Nothing to do where no rule exists and no server keeps groups an old rule gave.
        if not instances or (not rules_exist and not any((i.provider_state or {}).get(STATE_KEY) for i in instances)):
            return
        listed = {srv.id: srv for srv in provider.list_servers()}
        rules = all_rules(s)
        now = services.clock.now()
        plans: list[tuple[int, list[Change], list[str]]] = []
        for inst in instances:
            server = listed.get(inst.cloud_server_id or "")
            if server is None:
                continue  # gone: the state sync says so
            current: set[str] | frozenset[str] | None = server.security_groups
            if current is None:
                current = provider.server_security_groups(server.id)
                if current is None:
                    result.unsupported.setdefault(cloud, []).append(inst.uid)
                    continue
            changes, wanted = changes_for(inst, rules, now, set(current), keep)
            plans.append((inst.id, changes, wanted))
    if cloud in result.unsupported:
        log.info("cloud %s has no security groups: the network rules are not applied to %d servers",
                 cloud, len(result.unsupported[cloud]))
    # The cloud's calls first, then one transaction records what was done.
    done: dict[int, list[Change]] = defaultdict(list)
    for instance_id, changes, _wanted in plans:
        for change in changes:
            try:
                if change.add:
                    provider.add_security_group(change.server_id, change.group)
                else:
                    provider.remove_security_group(change.server_id, change.group)
            except CloudError as exc:
                result.failed.append((change, exc.message))
                log.warning("instance %s: security group %s not %s: %s", change.uid, change.group,
                            "added" if change.add else "removed", exc.message)
                continue
            done[instance_id].append(change)
            result.applied.append(change)
    with services.database.unit_of_work() as s:
        for instance_id, _changes, wanted in plans:
            row = s.get(Instance, instance_id)
            if row is None:
                continue
            ok = not any(c.instance_id == instance_id for c, _ in result.failed)
            remembered = set((row.provider_state or {}).get(STATE_KEY, []))
            # What the rules gave and still hold; a failed removal stays remembered, to be tried again.
            after = set(wanted) if ok else (remembered | {c.group for c in done[instance_id] if c.add}) - {
                c.group for c in done[instance_id] if not c.add}
            if sorted(after) != sorted(remembered):
                row.provider_state = {**(row.provider_state or {}), STATE_KEY: sorted(after)}
            for change in done[instance_id]:
                record(SYSTEM, s, services.clock, "instance.network.add" if change.add else "instance.network.remove",
                       target_type="instance", target_id=change.uid, cloud=cloud, server=change.server_id,
                       group=change.group, rules=list(change.rules))
