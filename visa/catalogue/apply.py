"""Makes the stored catalogue match the files, in the caller's transaction, and says what changed.

Entries are matched by name. What the files no longer name is hidden (flavours, images)
or disabled (plans), never deleted: instances still refer to them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.audit.service import record
from visa.catalogue.loader import Catalogue, CatalogueError
from visa.catalogue.models import (
    Flavour,
    FlavourLifetime,
    FlavourLimit,
    Image,
    ImageProtocol,
    NetworkRule,
    Plan,
)
from visa.catalogue.schemas import FlavourSpec, ImageSpec, NetworkRuleSpec
from visa.clock import Clock
from visa.clouds.models import Cloud
from visa.experiments.models import Instrument
from visa.policy import require


@dataclass
class Diff:
    changes: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.changes.append(line)

    def __bool__(self) -> bool:
        return bool(self.changes)

    def __str__(self) -> str:
        return "\n".join(self.changes) if self.changes else "no changes"


def _set(obj: Any, label: str, attr: str, value: Any, diff: Diff) -> None:
    old = getattr(obj, attr)
    if old != value:
        if obj.id is not None:
            diff.add(f"~ {label}: {attr} {old!r} -> {value!r}")
        setattr(obj, attr, value)


def cloud_ids(session: Session, catalogue: Catalogue) -> dict[str, int]:
    entries: list[Any] = [*catalogue.flavours, *catalogue.images, *catalogue.network_rules]
    wanted = {i.spec.cloud for i in entries if i.spec.cloud}
    found = {c.name: c.id for c in session.scalars(select(Cloud).where(Cloud.name.in_(wanted)))}
    problems = [
        f"{item.file}: entry {item.spec.name!r}: field 'cloud': unknown cloud {item.spec.cloud!r}"
        for item in entries
        if item.spec.cloud and item.spec.cloud not in found
    ]
    if problems:
        raise CatalogueError(problems)
    return found


def _instrument(session: Session, name: str, cache: dict[str, Instrument], diff: Diff) -> Instrument:
    if name not in cache:
        inst = session.scalar(select(Instrument).where(Instrument.name == name))
        if inst is None:
            inst = Instrument(name=name)
            session.add(inst)
            diff.add(f"+ instrument {name}")
        cache[name] = inst
    return cache[name]


def apply_flavour(
    session: Session, spec: FlavourSpec, flavour: Flavour | None, clouds: dict[str, int],
    instruments: dict[str, Instrument], diff: Diff,
) -> Flavour:
    label = f"flavour {spec.name}"
    if flavour is None:
        flavour = Flavour(name=spec.name)
        session.add(flavour)
        gpu = f", {spec.gpu.count}x {spec.gpu.kind}" if spec.gpu else ""
        diff.add(f"+ {label} ({spec.cores} cores, {spec.memory_mb} MB{gpu})")
    _set(flavour, label, "description", spec.description, diff)
    _set(flavour, label, "cores", spec.cores, diff)
    _set(flavour, label, "memory_mb", spec.memory_mb, diff)
    _set(flavour, label, "gpu_kind", spec.gpu.kind if spec.gpu else None, diff)
    _set(flavour, label, "gpu_count", spec.gpu.count if spec.gpu else 0, diff)
    _set(flavour, label, "cloud_flavour_ref", spec.cloud_flavour, diff)
    _set(flavour, label, "cloud_id", clouds.get(spec.cloud) if spec.cloud else None, diff)
    _set(flavour, label, "visible", spec.visible, diff)
    _set(flavour, label, "idle_warning_hours", spec.idle_warning_hours, diff)

    want_limits = {("role", r.value) for r in spec.limits.roles} | {("instrument", n) for n in spec.limits.instruments}
    have = {
        (("role", lim.role.value) if lim.role else ("instrument", lim.instrument.name if lim.instrument else "?")): lim
        for lim in flavour.limits
    }
    for key in sorted(set(have) - want_limits):
        flavour.limits.remove(have[key])
        diff.add(f"- {label}: limit {key[0]} {key[1]}")
    for kind, value in sorted(want_limits - set(have)):
        if kind == "role":
            flavour.limits.append(FlavourLimit(role=value))
        else:
            flavour.limits.append(FlavourLimit(instrument=_instrument(session, value, instruments, diff)))
        diff.add(f"+ {label}: limit {kind} {value}")

    _set(flavour, label, "limit_groups", sorted(set(spec.limits.groups)), diff)
    _set(flavour, label, "group_lifetimes",
         {lt.group: lt.hours for lt in sorted(spec.lifetimes, key=lambda x: x.group or "") if lt.group is not None}, diff)
    want_lt = {lt.role: lt.hours for lt in spec.lifetimes if lt.group is None}
    have_lt = {lt.role: lt for lt in flavour.lifetimes}
    for role in set(have_lt) - set(want_lt):
        flavour.lifetimes.remove(have_lt[role])
        diff.add(f"- {label}: lifetime for {role or 'everyone'}")
    for role, hours in want_lt.items():
        if role in have_lt:
            _set(have_lt[role], f"{label} lifetime for {role or 'everyone'}", "lifetime_hours", hours, diff)
        else:
            flavour.lifetimes.append(FlavourLifetime(role=role, lifetime_hours=hours))
            diff.add(f"+ {label}: lifetime {hours} h for {role or 'everyone'}")
    return flavour


def apply_image(session: Session, spec: ImageSpec, image: Image | None, clouds: dict[str, int], diff: Diff) -> Image:
    label = f"image {spec.name}"
    if image is None:
        image = Image(name=spec.name)
        session.add(image)
        diff.add(f"+ {label} ({spec.environment} {spec.version})")
    for attr, value in (
        ("environment", spec.environment),
        ("version", spec.version),
        ("description", spec.description),
        ("icon", spec.icon),
        ("cloud_image_ref", spec.cloud_image),
        ("cloud_id", clouds.get(spec.cloud) if spec.cloud else None),
        ("visible", spec.visible),
        ("autoaccept_extension", spec.autoaccept_extension),
        ("members_need_owner", spec.members_need_owner),
        ("options", spec.options),
        ("web_services", [w.model_dump() for w in spec.web_services]),
    ):
        _set(image, label, attr, value, diff)
    want = {p.protocol: p for p in spec.protocols}
    have = {p.protocol: p for p in image.protocols}
    for proto in set(have) - set(want):
        image.protocols.remove(have[proto])
        diff.add(f"- {label}: protocol {proto.value}")
    for proto, p in want.items():
        if proto in have:
            _set(have[proto], f"{label} {proto.value}", "port", p.port, diff)
            _set(have[proto], f"{label} {proto.value}", "optional", p.optional, diff)
        else:
            image.protocols.append(ImageProtocol(protocol=proto, port=p.port, optional=p.optional))
            diff.add(f"+ {label}: protocol {proto.value} on port {p.port}")
    return image


def apply_network_rule(
    session: Session, spec: NetworkRuleSpec, rule: NetworkRule | None, clouds: dict[str, int], diff: Diff
) -> NetworkRule:
    label = f"network rule {spec.name}"
    if rule is None:
        rule = NetworkRule(name=spec.name)
        session.add(rule)
        diff.add(f"+ {label} ({', '.join(spec.security_groups)})")
    for attr, value in (
        ("description", spec.description),
        ("security_groups", list(spec.security_groups)),
        ("cloud_id", clouds.get(spec.cloud) if spec.cloud else None),
        ("roles", sorted(r.value for r in spec.roles)),
        ("groups", sorted(set(spec.groups))),
        ("flavours", sorted(spec.flavours)),
        ("instruments", sorted(spec.instruments)),
        ("beamtime", spec.beamtime),
    ):
        _set(rule, label, attr, value, diff)
    return rule


# Called with (entries done, entries in all) as a long apply goes (the CLI's progress bar).
Progress = Callable[[int, int], None]


def apply_catalogue(actor: Actor, session: Session, clock: Clock, catalogue: Catalogue, *,
                    progress: Progress | None = None) -> Diff:
    """Apply validated files. The caller commits (or rolls back for a dry run)."""
    require(actor, "manage_catalogue")
    total = len(catalogue.flavours) + len(catalogue.images) + len(catalogue.network_rules)
    tick = progress or (lambda done, total: None)
    diff = Diff()
    clouds = cloud_ids(session, catalogue)
    instruments: dict[str, Instrument] = {}

    flavours = {f.name: f for f in session.scalars(select(Flavour))}
    seen_flavours = set()
    for n, item in enumerate(catalogue.flavours, 1):
        flavours[item.spec.name] = apply_flavour(
            session, item.spec, flavours.get(item.spec.name), clouds, instruments, diff
        )
        seen_flavours.add(item.spec.name)
        tick(n, total)

    images = {i.name: i for i in session.scalars(select(Image))}
    for n, item in enumerate(catalogue.images, 1):
        images[item.spec.name] = apply_image(session, item.spec, images.get(item.spec.name), clouds, diff)
        tick(len(catalogue.flavours) + n, total)
    # What the files of a kind no longer name is hidden, not deleted: instances refer to it.
    for given, stored, kind in ((catalogue.flavours, flavours, "flavour"), (catalogue.images, images, "image")):
        named = {i.spec.name for i in given}
        for name, obj in stored.items():
            if given and name not in named and obj.visible:
                obj.visible = False
                diff.add(f"- {kind} {name} (hidden)")
    session.flush()

    plans = {(p.image.name, p.flavour.name): p for p in session.scalars(select(Plan))}
    wanted: set[tuple[str, str]] = set()
    if catalogue.images:
        for item in catalogue.images:
            for ps in item.spec.plans:
                key = (item.spec.name, ps.flavour)
                wanted.add(key)
                plan = plans.get(key)
                label = f"plan {key[0]}/{key[1]}"
                if plan is None:
                    plan = Plan(image=images[key[0]], flavour=flavours[key[1]], preset=ps.preset, enabled=ps.enabled,
                                warm=ps.warm_windows())
                    session.add(plan)
                    plans[key] = plan
                    diff.add(f"+ {label}{' (preset)' if ps.preset else ''}")
                else:
                    _set(plan, label, "preset", ps.preset, diff)
                    _set(plan, label, "enabled", ps.enabled, diff)
                    _set(plan, label, "warm", ps.warm_windows(), diff)
        if any(k in wanted and p.preset for k, p in plans.items()):
            for key, plan in plans.items():
                if key not in wanted and plan.preset:
                    plan.preset = False
                    diff.add(f"~ plan {key[0]}/{key[1]}: no longer the preset")
        # Images named in the files own their plans; plans of other images stay as they are.
        named = {i.spec.name for i in catalogue.images}
        for key, plan in plans.items():
            if key[0] in named and key not in wanted and plan.enabled:
                plan.enabled = False
                plan.preset = False
                diff.add(f"- plan {key[0]}/{key[1]} (disabled)")
    # Rules are referred to by nothing: what the files of rules no longer name is deleted (the network
    # job then takes its groups off the servers that had them).
    if catalogue.network_rules:
        rules = {r.name: r for r in session.scalars(select(NetworkRule))}
        done = len(catalogue.flavours) + len(catalogue.images)
        for n, rule_item in enumerate(catalogue.network_rules, 1):
            apply_network_rule(session, rule_item.spec, rules.pop(rule_item.spec.name, None), clouds, diff)
            tick(done + n, total)
        for name, old in sorted(rules.items()):
            session.delete(old)
            diff.add(f"- network rule {name}")
    session.flush()
    if diff:
        record(actor, session, clock, "catalogue.apply", target_type="catalogue", changes=diff.changes[:200])
    return diff
