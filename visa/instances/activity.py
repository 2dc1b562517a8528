"""Is anyone using the machine? The probe's side of activity.

The gateway records browser traffic (``last_seen_at``) and input (``last_interaction_at``).
This job adds what the browser cannot see: it logs into each running machine over SSH with
visa's own key (see ``probe_keys``) as the probe account, whose key may only run the
activity report (``provisioning/files/probe.py``), and reads the owner's X idle time, the
load and the owner's processes with their CPU time.

* X input seen by the machine (the owner's idle time) moves ``last_interaction_at``.
* CPU used by the owner's processes between two reports, at least ``COMPUTE_CORES`` cores
  on average, sets ``last_compute_at``: a computation keeps its machine alive with no
  browser attached. The first report of a machine is paired with a second one taken
  ``sample_gap`` seconds later; afterwards each report is paired with the previous cycle's.
* A GPU computing for the owner (``nvidia-smi``: a GPU busy and one of the owner's processes
  on it, see ``signals``) sets ``last_compute_at``, whatever the CPU does.
* A Jupyter kernel running a cell (``execution_state`` busy) sets ``last_compute_at``; the
  kernels' ``last_activity`` moves it forward too (a cell run between two probes counts).

Host keys: visa gives each machine its SSH host key (``provisioning/host_keys``, derived from
visa's secret key and the instance uid, written by cloud-init) and accepts that key alone,
from the first connection on: whoever else answers at the address is refused, so nobody can
make an instance look busy (or idle) by standing in for it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import paramiko
from sqlalchemy import or_, select, update

from visa.clouds.models import Cloud
from visa.errors import VisaError
from visa.instances import probe_keys, signals
from visa.instances.models import Instance, InstanceState
from visa.provisioning import host_keys
from visa.services import Services
from visa.settings import Settings

log = logging.getLogger(__name__)

COMPUTE_CORES = 0.15  # average cores used by the owner's processes that count as computing (idle desktops: ~0.02)
PROBE_COMMAND = "visa-probe"
SSH_TIMEOUT = 10.0
# A report is a few KB; the machine is the user's, so what it answers is read up to this much.
MAX_REPORT_BYTES = 256 * 1024
RUNNING = (InstanceState.ACTIVE, InstanceState.PARTIALLY_ACTIVE)


@dataclass(frozen=True)
class Report:
    """One activity report, as the machine printed it."""

    taken_at: float  # time.monotonic() on this side
    x_idle_ms: int | None
    load: tuple[float, ...]
    cpu_count: int
    cpu_seconds: dict[int, float]  # the owner's processes: pid -> CPU time so far
    gpu_apps: dict[int, int | None] = field(default_factory=dict)  # pid -> GPU memory (MiB)
    gpu_utilization: tuple[int, ...] = ()  # percent, one per GPU
    kernels: tuple[signals.Kernel, ...] = ()

    @classmethod
    def parse(cls, text: str, taken_at: float) -> Report:
        """The report; ValueError for one that is not (never another error: the machine wrote it)."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("a report is a JSON object")
            idle = data.get("x_idle_ms")
            gpu = data.get("gpu")
            gpu = gpu if isinstance(gpu, dict) else {}
            return cls(
                taken_at=taken_at,
                x_idle_ms=int(idle) if idle is not None else None,
                load=tuple(float(v) for v in data.get("load", ())),
                cpu_count=int(data.get("cpu_count") or 1),
                cpu_seconds={int(p["pid"]): float(p["cpu_seconds"]) for p in data.get("processes", [])},
                gpu_apps=signals.compute_apps(gpu.get("apps")),
                gpu_utilization=signals.utilization(gpu.get("utilization")),
                kernels=signals.kernels(data.get("kernels")),
            )
        except (TypeError, AttributeError, KeyError, OverflowError) as exc:
            raise ValueError(f"not an activity report ({type(exc).__name__})") from None

    @property
    def gpu_busy(self) -> bool:
        return signals.gpu_busy(self.gpu_apps, self.gpu_utilization, set(self.cpu_seconds))

    @property
    def busy_kernels(self) -> int:
        return sum(k.busy for k in self.kernels)


def cores_used(before: Report, after: Report) -> float:
    """Average cores the owner's processes used between two reports (new processes count whole)."""
    elapsed = after.taken_at - before.taken_at
    if elapsed <= 0:
        return 0.0
    used = sum(max(0.0, cpu - before.cpu_seconds.get(pid, 0.0)) for pid, cpu in after.cpu_seconds.items())
    return used / elapsed


@dataclass(frozen=True)
class Target:
    instance_id: int
    uid: str
    host: str
    port: int
    # Set when the cloud reads activity itself (``Provider.activity_report``) instead of SSH.
    cloud: str | None = None


class _RefuseHostKey(paramiko.MissingHostKeyPolicy):
    """The machine offered a key of another type than the one visa gave it: refused."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise paramiko.SSHException(f"host key of {hostname} is not the one visa gave the instance")


class SshReader:
    """Reads reports over SSH: ``count`` reports ``gap`` seconds apart on one connection."""

    def __init__(self, settings: Settings, *, timeout: float = SSH_TIMEOUT) -> None:
        self.username = settings.provisioning.probe_username
        self.key = probe_keys.private_key(settings)
        self.timeout = timeout
        self.secret_key = settings.resolved_secret_key()

    def __call__(self, target: Target, count: int, gap: float) -> list[Report]:
        client = paramiko.SSHClient()
        # Only the instance's own key (paramiko then asks the server for that key type first).
        name = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
        client.get_host_keys().add(name, "ssh-ed25519", host_keys.pinned(self.secret_key, target.uid))
        client.set_missing_host_key_policy(_RefuseHostKey())
        try:
            client.connect(
                target.host, target.port, username=self.username, pkey=self.key, timeout=self.timeout,
                banner_timeout=self.timeout, auth_timeout=self.timeout, allow_agent=False, look_for_keys=False,
            )
            reports = []
            for i in range(count):
                if i:
                    time.sleep(gap)
                _, stdout, _ = client.exec_command(PROBE_COMMAND, timeout=self.timeout)
                text = read_report(stdout.channel, self.timeout)
                reports.append(Report.parse(text, time.monotonic()))
            return reports
        finally:
            client.close()


def read_report(channel: paramiko.Channel, timeout: float, limit: int = MAX_REPORT_BYTES) -> str:
    """The command's output, up to ``limit`` bytes and ``timeout`` seconds in all (a machine
    that floods or drips is cut off there: ValueError, the probe of that machine failed)."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ValueError(f"no whole report within {timeout:g} s")
            channel.settimeout(left)
            chunk = channel.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > limit:
                raise ValueError(f"a report of more than {limit} bytes")
    except TimeoutError as exc:
        raise ValueError(f"no whole report within {timeout:g} s") from exc
    finally:
        channel.close()
    return data.decode(errors="replace")


Reader = Callable[[Target, int, float], list[Report]]


class ProviderReader:
    """Reads reports through the cloud's provider (the local cloud has no SSH to its sessions)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def __call__(self, target: Target, count: int, gap: float) -> list[Report]:
        assert target.cloud is not None
        provider = self.services.provider(target.cloud)
        reports = []
        for i in range(count):
            if i:
                time.sleep(gap)
            data = provider.activity_report(target.uid)
            if data is None:
                raise ValueError("the cloud gives no activity report for this machine")
            reports.append(Report.parse(json.dumps(data), time.monotonic()))
        return reports


@dataclass
class Observation:
    instance_id: int
    cores: float
    computing: bool
    last_input: datetime | None
    gpu: bool = False  # the owner computes on a GPU
    busy_kernels: int = 0
    last_kernel_activity: datetime | None = None  # never later than now


@dataclass
class ProbeResult:
    probed: int = 0
    computing: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)


class ActivityProbe:
    """Held by the scheduler across cycles: it keeps each machine's last report."""

    def __init__(self, services: Services, reader: Reader | None = None, *, sample_gap: float = 2.0,
                 workers: int = 16) -> None:
        self.services = services
        self._reader = reader
        self.sample_gap = sample_gap
        self.workers = workers
        self._last: dict[int, Report] = {}
        self._provider_reader = ProviderReader(services)

    @property
    def reader(self) -> Reader:
        if self._reader is None:
            self._reader = SshReader(self.services.settings)
        return self._reader

    def targets(self) -> list[Target]:
        """Running machines: over SSH (port 22 unless the cloud says otherwise), or through the
        local cloud, whose sessions the provider reads itself."""
        with self.services.database.sessionmaker() as s:
            rows = s.execute(
                select(Instance.id, Instance.uid, Instance.address, Instance.provider_state, Cloud.kind, Cloud.name)
                .join(Cloud, Cloud.id == Instance.cloud_id)
                .where(Instance.deleted_at.is_(None), Instance.state.in_(RUNNING), Instance.address.is_not(None))
            ).all()
        found = []
        for instance_id, uid, address, state, kind, cloud in rows:
            port = ((state or {}).get("ports") or {}).get("ssh") or (22 if kind != "local" else None)
            if port:
                found.append(Target(instance_id, uid, address, int(port)))
            elif kind == "local":
                found.append(Target(instance_id, uid, address, 0, cloud=cloud))
        return found

    def observe(self, target: Target) -> Observation:
        previous = self._last.get(target.instance_id)
        max_age = 3 * self.services.settings.scheduler.activity_seconds
        fresh = previous is not None and time.monotonic() - previous.taken_at < max_age
        reader = self._provider_reader if target.cloud else self.reader
        reports = reader(target, 1 if fresh else 2, self.sample_gap)
        before, after = (previous, reports[-1]) if fresh else (reports[0], reports[-1])
        assert before is not None
        self._last[target.instance_id] = after
        cores = cores_used(before, after)
        now = self.services.clock.now()
        last_input = now - timedelta(milliseconds=after.x_idle_ms) if after.x_idle_ms is not None else None
        kernel_times = [k.last_activity for k in after.kernels if k.last_activity is not None]
        # The machine's clock, or a hostile answer, may be ahead: never later than now.
        last_kernel = min(max(kernel_times), now) if kernel_times else None
        gpu, kernels = after.gpu_busy, after.busy_kernels
        return Observation(target.instance_id, cores, cores >= COMPUTE_CORES or gpu or kernels > 0, last_input,
                           gpu=gpu, busy_kernels=kernels, last_kernel_activity=last_kernel)

    def run(self, targets: list[Target] | None = None) -> ProbeResult:
        """Probe every running machine (in parallel) and record what was seen."""
        targets = self.targets() if targets is None else targets
        result = ProbeResult(probed=len(targets))
        if not targets:
            self._last.clear()
            return result

        def one(t: Target) -> Observation | None:
            try:
                return self.observe(t)
            except (TimeoutError, OSError, paramiko.SSHException, ValueError, KeyError, VisaError) as exc:
                result.failed[t.instance_id] = str(exc) or type(exc).__name__
                log.info("activity probe of %s failed: %s", t.uid, result.failed[t.instance_id])
                return None

        with ThreadPoolExecutor(max_workers=min(self.workers, len(targets))) as pool:
            observations = [o for o in pool.map(one, targets) if o is not None]
        record(self.services, observations)
        result.computing = [o.instance_id for o in observations if o.computing]
        live = {t.instance_id for t in targets}
        for gone in set(self._last) - live:
            del self._last[gone]
        return result


def record(services: Services, observations: list[Observation]) -> None:
    """Write what was seen: one short transaction, each value only moving forward."""
    now = services.clock.now()
    with services.database.unit_of_work() as s:
        for o in observations:
            if o.computing:
                s.execute(update(Instance).where(Instance.id == o.instance_id).values(last_compute_at=now),
                          execution_options={"synchronize_session": False})
            elif o.last_kernel_activity is not None:
                s.execute(
                    update(Instance)
                    .where(Instance.id == o.instance_id,
                           or_(Instance.last_compute_at.is_(None), Instance.last_compute_at < o.last_kernel_activity))
                    .values(last_compute_at=o.last_kernel_activity),
                    execution_options={"synchronize_session": False},
                )
            if o.last_input is not None:
                s.execute(
                    update(Instance)
                    .where(Instance.id == o.instance_id,
                           or_(Instance.last_interaction_at.is_(None), Instance.last_interaction_at < o.last_input))
                    .values(last_interaction_at=o.last_input),
                    execution_options={"synchronize_session": False},
                )
