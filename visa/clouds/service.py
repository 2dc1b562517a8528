"""Clouds: registering them, switching them on and off, and asking each for its limits (with a short
timeout and a short cache, so a slow cloud cannot hold up a page). The CLI and the admin side use
these same functions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from visa.actor import Actor
from visa.audit.service import record
from visa.clock import Clock
from visa.clouds.base import Capacity, CloudLimits, Provider
from visa.clouds.models import Cloud
from visa.clouds.registry import provider_class
from visa.errors import InvalidInput, NotFound
from visa.policy import require
from visa.settings import ProvisioningSettings


class _Database(Protocol):
    sessionmaker: sessionmaker[Session]


class CloudHost(Protocol):
    """What the probes need of the application (``visa.services.Services`` is one)."""

    @property
    def database(self) -> _Database: ...  # read-only: a Services' Database is one

    def provider(self, cloud_name: str) -> Provider: ...


# --- registering ------------------------------------------------------------------------------


# How a cloud's own provisioning settings (``config["provisioning"]``) are checked: the
# provisioning rules over the site's settings (visa.provisioning.site.cloud_check). Provisioning
# sits above the clouds, so the caller hands them in; raises InvalidInput.
SiteCheck = Callable[[dict[str, Any]], object]


def check_provisioning(config: dict[str, Any]) -> None:
    """Without the site's rules: a cloud's own provisioning settings are at least typed settings."""
    overrides = config.get("provisioning")
    if overrides is None:
        return
    if not isinstance(overrides, dict):
        raise InvalidInput("config.provisioning must be an object", field="config.provisioning")
    try:
        ProvisioningSettings.model_validate(overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(["config", "provisioning", *(str(p) for p in first["loc"])])
        raise InvalidInput(f"{where}: {first['msg']}", field=where) from None


def register_cloud(actor: Actor, session: Session, clock: Clock, name: str, kind: str, config: dict[str, Any],
                   *, check_site: SiteCheck | None = None) -> Cloud:
    """Add a cloud, or change the kind and settings of the one of this name (it stays enabled or not).
    ``check_site``: the provisioning rules the cloud's own provisioning settings are checked by."""
    require(actor, "manage_clouds")
    if not name or len(name) > 64:
        raise InvalidInput("a cloud name is 1-64 characters", field="name")
    cls = provider_class(kind)  # InvalidInput for a kind no provider answers to
    if not isinstance(config, dict):
        raise InvalidInput("the provider settings are a JSON object", field="config")
    if check_site is not None:
        check_site(config)
    else:
        check_provisioning(config)
    cls.check_config(config)
    cloud = session.scalar(select(Cloud).where(Cloud.name == name))
    if cloud is None:
        cloud = Cloud(name=name, kind=kind, config=config, enabled=True, created_at=clock.now())
        session.add(cloud)
    else:
        cloud.kind, cloud.config = kind, config
    session.flush()
    # The settings may hold secrets (or the names of variables that do): never in the audit log.
    record(actor, session, clock, "cloud.register", target_type="cloud", target_id=name, kind=kind)
    return cloud


def list_clouds(session: Session) -> list[Cloud]:
    return list(session.scalars(select(Cloud).order_by(Cloud.name)))


def set_cloud_enabled(actor: Actor, session: Session, clock: Clock, name: str, enabled: bool) -> Cloud:
    """A disabled cloud gets no new instances; those it has keep running."""
    require(actor, "manage_clouds")
    cloud = session.scalar(select(Cloud).where(Cloud.name == name))
    if cloud is None:
        raise NotFound(f"no cloud {name[:64]!r}", field="name")
    if cloud.enabled != enabled:
        cloud.enabled = enabled
        record(actor, session, clock, "cloud.enable" if enabled else "cloud.disable", target_type="cloud",
               target_id=name)
    return cloud


def cloud_names(session: Session) -> dict[int, str]:
    return {c.id: c.name for c in session.scalars(select(Cloud))}


# --- limits and status ------------------------------------------------------------------------

CACHE_SECONDS = 5.0
TIMEOUT_SECONDS = 2.0

# A cloud call that hangs past its timeout keeps its thread; the cache limits how many pile up.
_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="cloud-probe")
_lock = threading.Lock()
_cache: dict[tuple[int, str], tuple[float, CloudStatus]] = {}


@dataclass(frozen=True)
class CloudStatus:
    name: str
    kind: str
    enabled: bool
    ok: bool
    message: str | None
    limits: CloudLimits | None
    # Sessions on visa's own machine: whether they are isolated, and how or why not.
    isolated: bool | None = None
    isolation: str | None = None

    @property
    def status(self) -> str:
        if not self.enabled:
            return "disabled"
        return "ok" if self.ok else "unavailable"


def _probe(services: CloudHost, cloud: Cloud) -> CloudStatus:
    try:
        provider = services.provider(cloud.name)
        limits = provider.limits()
        isolation = provider.isolation()
    except Exception as exc:  # a probe reports, it does not raise
        return CloudStatus(cloud.name, cloud.kind, True, False, str(exc)[:200] or type(exc).__name__, None)
    isolated, how = isolation if isolation is not None else (None, None)
    return CloudStatus(cloud.name, cloud.kind, True, True, None, limits, isolated, how)


def cloud_statuses(
    services: CloudHost, *, timeout: float = TIMEOUT_SECONDS, max_age: float = CACHE_SECONDS
) -> list[CloudStatus]:
    """Every configured cloud's status, each answer reused for ``max_age`` seconds."""
    with services.database.sessionmaker() as s:
        clouds = list(s.scalars(select(Cloud).order_by(Cloud.name)))
        s.expunge_all()
    now = time.monotonic()
    out: list[CloudStatus] = []
    pending = []
    for cloud in clouds:
        key = (id(services), cloud.name)
        with _lock:
            hit = _cache.get(key)
        if hit and now - hit[0] < max_age:
            out.append(hit[1])
        else:
            pending.append(cloud)
    # Clouds are asked in parallel, so N slow clouds cost one timeout, not N.
    futures = [(c, _pool.submit(_probe, services, c) if c.enabled else None) for c in pending]
    deadline = time.monotonic() + timeout
    for cloud, fut in futures:
        if fut is None:
            status = CloudStatus(cloud.name, cloud.kind, False, True, None, None)
        else:
            try:
                status = fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                status = CloudStatus(cloud.name, cloud.kind, True, False, f"no answer within {timeout:g} s", None)
        with _lock:
            _cache[(id(services), cloud.name)] = (time.monotonic(), status)
        out.append(status)
    return sorted(out, key=lambda c: c.name)


def clear_cache() -> None:
    with _lock:
        _cache.clear()
        _capacity_cache.clear()


# --- capacity ---------------------------------------------------------------------------------

CAPACITY_SECONDS = 15.0
CAPACITY_TIMEOUT = 5.0
_capacity_cache: dict[tuple[int, str], tuple[float, CapacityAnswer]] = {}


@dataclass(frozen=True)
class CapacityAnswer:
    """A cloud's capacity, or why it could not be had (``capacity`` None: unknown)."""

    capacity: Capacity | None
    message: str | None = None


def _read_capacity(services: CloudHost, name: str) -> CapacityAnswer:
    try:
        return CapacityAnswer(services.provider(name).capacity())
    except Exception as exc:  # unknown capacity leaves the decision to the cloud
        return CapacityAnswer(None, str(getattr(exc, "message", exc))[:200] or type(exc).__name__)


def cloud_capacity(services: CloudHost, name: str, *, timeout: float = CAPACITY_TIMEOUT,
                   max_age: float = CAPACITY_SECONDS) -> CapacityAnswer:
    """What the cloud can still give (cached ``max_age`` seconds; a slow cloud costs ``timeout``)."""
    key = (id(services), name)
    with _lock:
        hit = _capacity_cache.get(key)
    if hit and time.monotonic() - hit[0] < max_age:
        return hit[1]
    try:
        answer = _pool.submit(_read_capacity, services, name).result(timeout=timeout)
    except FutureTimeout:
        answer = CapacityAnswer(None, f"no answer within {timeout:g} s")
    with _lock:
        _capacity_cache[key] = (time.monotonic(), answer)
    return answer


def forget_capacity(services: CloudHost, name: str) -> None:
    """Read the cloud again next time (after visa itself took or gave back resources)."""
    with _lock:
        _capacity_cache.pop((id(services), name), None)


@dataclass(frozen=True)
class Room:
    """Whether one more machine of a flavour fits on a cloud now: True, False, or None when
    the cloud cannot say (then the cloud decides at creation)."""

    available: bool | None
    message: str
    needs: dict[str, int]


def room_for(services: CloudHost, cloud_name: str, flavour_ref: str, cores: int, memory_mb: int) -> Room:
    try:
        needs = services.provider(cloud_name).needs(flavour_ref, cores, memory_mb)
    except Exception as exc:
        return Room(None, f"cannot say: {str(getattr(exc, 'message', exc))[:200]}", {})
    answer = cloud_capacity(services, cloud_name)
    if answer.capacity is None:
        return Room(None, f"cannot say: {answer.message or 'the cloud does not report its capacity'}", needs)
    refusal = answer.capacity.refusal(needs)
    if refusal is not None:
        return Room(False, refusal, needs)
    return Room(True, "available now", needs)
