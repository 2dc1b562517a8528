"""Which security groups a server should have by the network rules, and the changes that bring it there.

A rule (``network-rules`` catalogue entries, :class:`visa.catalogue.models.NetworkRule`) gives its
groups while every condition it states holds: the owner holds one of its roles, the server is of
one of its flavours, one of the server's experiments (of which the owner is still a member) is on
one of its instruments and, with ``beamtime``, that experiment's beamtime runs today (its start
and end dates, inclusive, in UTC). The groups a server should have are the union over the rules.

visa adds and removes only the groups the rules name (or named when it gave them: the instance's
``provider_state["network_groups"]``); the cloud's own configured groups, the base group and any
group an operator gave by hand are left alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.catalogue.models import NetworkRule
from visa.clouds.base import Provider
from visa.errors import InvalidInput
from visa.experiments.models import Experiment
from visa.instances.models import Instance
from visa.policy import require
from visa.settings import NetworkSettings
from visa.states import InstanceState

# Where the groups the rules gave a server are remembered (to take them off when a rule goes).
STATE_KEY = "network_groups"
# Servers whose groups the rules keep up to date: those that exist in the cloud and are not going away.
LIVE_STATES = frozenset({
    InstanceState.STARTING, InstanceState.ACTIVE, InstanceState.PARTIALLY_ACTIVE, InstanceState.STOPPING,
    InstanceState.STOPPED, InstanceState.REBOOTING, InstanceState.UNAVAILABLE, InstanceState.UNKNOWN,
})


def beamtime_runs(experiment: Experiment, today: date) -> bool:
    return experiment.start_date <= today <= experiment.end_date


def rule_matches(rule: NetworkRule, *, cloud_id: int | None, roles: Iterable[str], flavour: str,
                 experiments: Sequence[Experiment], today: date, user_groups: Iterable[str] = ()) -> bool:
    if rule.cloud_id is not None and rule.cloud_id != cloud_id:
        return False
    if rule.roles and not set(rule.roles) & set(roles):
        return False
    if rule.groups and not set(rule.groups) & set(user_groups):
        return False
    if rule.flavours and flavour not in rule.flavours:
        return False
    relevant = [e for e in experiments if not rule.instruments or e.instrument.name in rule.instruments]
    if rule.instruments and not relevant:
        return False
    return not rule.beamtime or any(beamtime_runs(e, today) for e in relevant)


def owner_experiments(instance: Instance) -> list[Experiment]:
    """The instance's experiments its owner is a member of now (a member removed no longer counts)."""
    return [e for e in instance.experiments if instance.owner_id in {m.id for m in e.members}]


def wanted_groups(instance: Instance, rules: Sequence[NetworkRule], now: datetime) -> dict[str, list[str]]:
    """Group -> the names of the rules that give it to this instance's server now."""
    roles = {r.value for r in instance.owner.roles_at(now)}
    user_groups = instance.owner.group_names()
    experiments = owner_experiments(instance)
    out: dict[str, list[str]] = {}
    for rule in rules:
        if rule_matches(rule, cloud_id=instance.cloud_id, roles=roles, flavour=instance.plan.flavour.name,
                        experiments=experiments, today=now.date(), user_groups=user_groups):
            for group in rule.security_groups:
                out.setdefault(group, []).append(rule.name)
    return out


def all_rules(session: Session) -> list[NetworkRule]:
    return list(session.scalars(select(NetworkRule).order_by(NetworkRule.name)))


def groups_at_create(session: Session, instance: Instance, now: datetime, base_group: str | None) -> tuple[str, ...]:
    """What a new server is given besides its cloud's own groups: the base group, then the rules' groups."""
    groups = [base_group] if base_group else []
    groups.extend(sorted(wanted_groups(instance, all_rules(session), now)))
    return tuple(dict.fromkeys(groups))


@dataclass(frozen=True)
class Change:
    """One group to add to, or take off, one server, and why."""

    instance_id: int
    uid: str
    cloud: str
    server_id: str
    group: str
    add: bool
    rules: tuple[str, ...]  # the rules that give it (added) or none (removed)


def changes_for(instance: Instance, rules: Sequence[NetworkRule], now: datetime, current: set[str] | frozenset[str],
                keep: Iterable[str] = ()) -> tuple[list[Change], list[str]]:
    """The changes that give the server the groups the rules want, and the groups it should have after.

    ``current``: the server's groups now; ``keep``: groups never taken off (the cloud's configured
    groups and the base group)."""
    wanted = wanted_groups(instance, rules, now)
    managed = {g for r in rules for g in r.security_groups} | set((instance.provider_state or {}).get(STATE_KEY, []))
    managed -= set(keep)
    server_id = instance.cloud_server_id or ""

    def change(group: str, add: bool) -> Change:
        return Change(instance.id, instance.uid, instance.cloud.name, server_id, group, add,
                      tuple(wanted.get(group, ())) if add else ())

    changes = [change(g, True) for g in sorted(set(wanted) - current)]
    changes += [change(g, False) for g in sorted((current & managed) - set(wanted))]
    return changes, sorted(wanted)


@dataclass(frozen=True)
class BaseGroupReport:
    cloud: str
    group: str
    ports: tuple[int, ...]
    sources: tuple[str, ...]
    lines: tuple[str, ...]  # what is wrong (or, with create, what was done); empty: it is right


def base_ports(session: Session, ssh_port: int) -> list[int]:
    """The ports a server answers visa on: every catalogue image's protocols (desktop, Jupyter...) and SSH."""
    from visa.catalogue.models import ImageProtocol

    return sorted(set(session.scalars(select(ImageProtocol.port).distinct())) | {ssh_port})


def check_base_group(actor: Actor, session: Session, provider: Provider, settings: NetworkSettings, *,
                     create: bool = False, group: str | None = None) -> BaseGroupReport:
    """Check (or, with ``create``, make right) the base security group of one cloud: the servers'
    desktop, Jupyter and SSH ports open only to the gateway's and the probe's addresses."""
    require(actor, "manage_clouds")
    name = group or settings.base_group
    if not name:
        raise InvalidInput("no base group: set network.base_group (or give its name)", field="network.base_group")
    if not settings.access_from:
        raise InvalidInput("network.access_from is empty: give the addresses of visa's gateway and probe",
                           field="network.access_from")
    ports = base_ports(session, settings.ssh_port)
    lines = provider.base_group_report(name, ports, settings.access_from, create=create)
    return BaseGroupReport(provider.name, name, tuple(ports), tuple(settings.access_from), tuple(lines))
