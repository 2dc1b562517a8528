"""The provider contract: one class per cloud, all behind this interface.

Subclass :class:`Provider` and override every abstract method. A provider talks to one
configured cloud (a :class:`visa.clouds.models.Cloud` row): it knows nothing of users,
quotas or the database, and it never blocks for long — callers poll ``list_servers``.

Edge cases every implementation must honour:

* ``create`` returns as soon as the cloud accepted the request (state BUILDING is fine);
  it raises :class:`visa.errors.CloudError` with a message a user can read for quota
  exceeded, no valid host, missing image or flavour; ``transient=True`` for timeouts and
  5xx, which callers retry with backoff.
* ``get`` returns ``None`` (not an error) when the server is gone.
* ``list_servers`` returns every server of this cloud that carries visa's tag, in as few
  calls as the cloud allows (one paginated list), never one call per server.
* ``start`` on a running server, ``stop`` on a stopped one, and ``delete`` on a missing
  one succeed without doing anything: the scheduler may repeat itself.
* States are the cloud-level :class:`visa.states.InstanceState` values
  (BUILDING, ACTIVE, STOPPING, STOPPED, REBOOTING, ..., DELETED, ERROR); turning cloud
  ACTIVE into STARTING / PARTIALLY_ACTIVE / ACTIVE by probing ports is the scheduler's job.
"""

from __future__ import annotations

import abc
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from visa.errors import CloudError
from visa.states import InstanceState

if TYPE_CHECKING:
    from visa.clouds.sftp import FileAccess
    from visa.settings import Settings

# Metadata key and tag by which visa recognises its own servers in a shared cloud.
VISA_TAG = "visa"
# How much of a machine's console ``boot_report`` asks for, and returns at most.
REPORT_LINES = 200
REPORT_MAX_CHARS = 64 * 1024


@dataclass(frozen=True)
class MountSpec:
    """A directory the machine must see at ``target`` (experiment data, processed area)."""

    source: str
    target: str
    read_only: bool = True
    kind: str = "nfs"


@dataclass(frozen=True)
class ServerSpec:
    """Everything a provider needs to create one machine."""

    name: str
    instance_uid: str
    image_ref: str
    flavour_ref: str
    user_data: str
    secret: str
    metadata: dict[str, str] = field(default_factory=dict)
    protocols: dict[str, int] = field(default_factory=dict)
    mounts: tuple[MountSpec, ...] = ()
    screen_width: int = 1280
    screen_height: int = 800
    keyboard_layout: str = "en-us"
    owner_username: str = ""
    # The owner's unix identity at the facility, when known (a local session runs as it).
    owner_uid: int | None = None
    owner_gid: int | None = None
    owner_groups: tuple[int, ...] = ()  # supplementary gids
    # The unix account of visa's host recorded as the owner's (name, uid), for a cloud that runs
    # sessions as host accounts (``Provider.new_account``): the only account it makes or adopts.
    account: tuple[str, int] | None = None
    # The owner's persistent home share, mounted at their home (``target``) on every machine of
    # theirs; None: the provider keeps the home (the local cloud: one per user).
    home: MountSpec | None = None
    # A home of its own, never the owner's shared one (people other than the owner act as the
    # owner in this machine): with it ``home`` is None and the local cloud binds the instance's home.
    own_home: bool = False
    cores: int = 1
    memory_mb: int = 1024
    # Security groups the network rules give this machine (besides the cloud's own configured ones).
    security_groups: tuple[str, ...] = ()
    # JupyterLab's culling of idle kernels (``provisioning.jupyter_cull_*``; 0 s: none), for a
    # cloud that starts JupyterLab itself (a VM's comes in its user-data).
    jupyter_cull_idle_seconds: int = 0
    jupyter_cull_interval_seconds: int = 300
    jupyter_cull_connected: bool = False


@dataclass(frozen=True)
class Server:
    """What a cloud says about one of visa's servers."""

    id: str
    name: str
    state: InstanceState
    address: str | None = None
    # Where each protocol answers when it is not the image's port on ``address``
    # (the local provider runs many desktops on one host).
    ports: dict[str, int] = field(default_factory=dict)
    # Protocols that answer on a unix socket of this host instead (the local provider's
    # sandboxed sessions have no network): protocol -> socket path.
    sockets: dict[str, str] = field(default_factory=dict)
    instance_uid: str | None = None
    fault: str | None = None
    created_at: datetime | None = None
    # The security groups the server has, when the cloud's list says (else None: ask
    # ``Provider.server_security_groups``).
    security_groups: frozenset[str] | None = None
    provider_state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CatalogueItem:
    id: str
    name: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CloudLimits:
    """Quota and use of the project visa runs in; ``None`` where the cloud does not say."""

    max_instances: int | None = None
    max_cores: int | None = None
    max_memory_mb: int | None = None
    used_instances: int = 0
    used_cores: int = 0
    used_memory_mb: int = 0


# Placement's standard resource classes; GPUs come as a custom class per model
# (CUSTOM_GPU_A40), as passed-through PCI devices or as virtual GPUs.
VCPU, MEMORY_MB, DISK_GB = "VCPU", "MEMORY_MB", "DISK_GB"
GPU_CLASSES = ("VGPU", "PCI_DEVICE")


def is_gpu_class(resource_class: str) -> bool:
    return resource_class in GPU_CLASSES or resource_class.startswith("CUSTOM_GPU")


@dataclass(frozen=True)
class Pool:
    """One resource class on one host: what can be allocated (inventory less reserved, times
    the allocation ratio), what is, and the largest single allocation allowed."""

    total: int
    used: int
    max_unit: int | None = None

    @property
    def free(self) -> int:
        return max(0, self.total - self.used)


@dataclass(frozen=True)
class HostCapacity:
    """A host (with its nested providers: a GPU on a child provider counts for its host)."""

    name: str
    pools: dict[str, Pool]

    def shortfall(self, needs: dict[str, int]) -> list[str]:
        """The resource classes this host cannot give ``needs`` now (empty: it fits)."""
        short = []
        for rc, amount in needs.items():
            pool = self.pools.get(rc)
            if amount <= 0:
                continue
            if pool is None or pool.free < amount or (pool.max_unit is not None and pool.max_unit < amount):
                short.append(rc)
        return short


@dataclass(frozen=True)
class Capacity:
    """What a cloud can still give, host by host: a machine must fit on one host."""

    hosts: tuple[HostCapacity, ...] = ()

    def totals(self) -> dict[str, Pool]:
        out: dict[str, Pool] = {}
        for host in self.hosts:
            for rc, pool in host.pools.items():
                seen = out.get(rc, Pool(0, 0))
                out[rc] = Pool(seen.total + pool.total, seen.used + pool.used)
        return out

    def refusal(self, needs: dict[str, int]) -> str | None:
        """None when some host can take ``needs`` now; else why not, naming what is short."""
        if any(not h.shortfall(needs) for h in self.hosts):
            return None
        totals = self.totals()
        missing = sorted({rc for h in self.hosts for rc in h.shortfall(needs)} or needs)
        parts = []
        for rc in missing:
            pool = totals.get(rc)
            have = "none on this cloud" if pool is None or pool.total == 0 else f"{pool.free} of {pool.total} free"
            parts.append(f"{rc} {needs.get(rc, 0)} needed, {have}")
        return "no host has room for it now (" + "; ".join(parts) + ")"


class Provider(abc.ABC):
    """A cloud visa provisions on. Subclass this, and override the abstract methods."""

    kind: str = ""

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.config = config

    @classmethod
    def configured(cls, name: str, config: dict[str, Any], settings: Settings) -> Provider:
        """The provider of a configured cloud; a subclass fills in the defaults it takes from visa's settings."""
        return cls(name, config)

    @classmethod  # noqa: B027 (optional hook)
    def check_config(cls, config: dict[str, Any]) -> None:
        """Refuse a configuration this provider cannot use, before it is stored: raise
        :class:`visa.errors.InvalidInput` naming the key (``config.<key>``). Secrets may still be
        ``{"env": "VAR"}`` here. The default accepts anything."""

    @classmethod
    def config_files(cls, config: dict[str, Any]) -> list[str]:
        """Files the provider reads its settings from besides ``config`` (a ``clouds.yaml``): one
        edited in place gets a new provider too, as a cloud registered again does. Default none."""
        return []

    @abc.abstractmethod
    def create(self, spec: ServerSpec) -> Server:
        """Ask the cloud for a new server; return at once."""

    @abc.abstractmethod
    def get(self, server_id: str) -> Server | None:
        """One server, or None when the cloud no longer has it."""

    @abc.abstractmethod
    def list_servers(self) -> list[Server]:
        """All of visa's servers on this cloud, in as few calls as possible."""

    @abc.abstractmethod
    def start(self, server_id: str) -> None: ...

    @abc.abstractmethod
    def stop(self, server_id: str) -> None: ...

    @abc.abstractmethod
    def reboot(self, server_id: str) -> None: ...

    @abc.abstractmethod
    def delete(self, server_id: str) -> None: ...

    def images(self) -> list[CatalogueItem]:
        return []

    def flavours(self) -> list[CatalogueItem]:
        return []

    def networks(self) -> list[CatalogueItem]:
        return []

    def security_groups(self) -> list[CatalogueItem]:
        return []

    def limits(self) -> CloudLimits:
        return CloudLimits()

    # --- security groups of one server (the network rules) -------------------------------------

    def server_security_groups(self, server_id: str) -> set[str] | None:
        """The names of the security groups the server has now. None (the default): this cloud has
        no security groups, and the network rules are reported for it, never applied. Edge cases: a
        server that is gone gives an empty set; may raise :class:`visa.errors.CloudError`."""
        return None

    def add_security_group(self, server_id: str, group: str) -> None:
        """Give the server a security group by name (all its ports). Adding one it has succeeds doing
        nothing. Raises :class:`visa.errors.CloudError` (``reason="security_group_not_found"``) for a
        group the cloud does not have."""
        raise CloudError(f"cloud {self.name!r} has no security groups", reason="unsupported")

    def remove_security_group(self, server_id: str, group: str) -> None:
        """Take a security group off the server. Removing one it lacks succeeds doing nothing."""
        raise CloudError(f"cloud {self.name!r} has no security groups", reason="unsupported")

    def base_group_report(self, group: str, ports: Collection[int], sources: Collection[str], *,
                          create: bool = False) -> list[str]:
        """Check the base security group ``group``: every port of ``ports`` open (TCP, ingress) to
        each address range of ``sources`` and to nothing else, no other ingress rule. Returns what is
        wrong, one line each (empty: it is right). ``create``: make the group, or add its missing
        rules and delete its too-open ones, and report what was done. The default: the cloud has no
        security groups (one line saying so)."""
        return [f"cloud {self.name!r} has no security groups: its servers' ports are not filtered by it"]

    def capacity(self) -> Capacity | None:
        """What the cloud can still give now, per host and resource class, or None (the default)
        when it cannot say. Read from the cloud's own accounting (OpenStack Placement's
        inventories and usages; the host itself for the local cloud), never from visa's
        records. May raise :class:`visa.errors.CloudError`; callers treat that as "cannot say"
        and let the cloud decide at creation."""
        return None

    def needs(self, flavour_ref: str, cores: int, memory_mb: int) -> dict[str, int]:
        """The resources (by resource class) one server of this cloud flavour takes. By default
        the catalogue's cores and memory; a cloud that knows its flavours says better (Nova's
        flavour with its ``resources:<CLASS>=<n>`` extra specs, GPUs included). Raises
        :class:`visa.errors.CloudError` (``reason="flavour_not_found"``) for an unknown flavour."""
        return {VCPU: cores, MEMORY_MB: memory_mb}

    def activity_report(self, server_id: str) -> dict[str, Any] | None:
        """What the machine says of its use, when the provider can read it without SSH.

        Same fields as the SSH probe's report: ``x_idle_ms`` (or None), ``load``,
        ``cpu_count`` and ``processes`` ([{"pid", "command", "cpu_seconds"}], the user's
        own processes). None (the default): the scheduler asks the machine over SSH.
        """
        return None

    def apply_display(self, server_id: str, *, width: int, height: int, keyboard_layout: str) -> None:
        """Give a running desktop the instance's current screen size and keyboard layout (the owner
        changed them): called when the owner connects, for a cloud of sessions on visa's host. Edge
        cases: the default does nothing (a VM takes them from its root helper over SSH,
        ``visa.instances.display``); a server that is gone or stopped is left alone; may raise
        :class:`visa.errors.CloudError`, which callers log and ignore (the connection goes on)."""
        return None

    def boot_report(self, server_id: str) -> str | None:
        """The tail of what the machine printed while booting (its console), or None.

        Read for instances still starting, to find the boot scripts' ``visa: FAILED <step>:
        <reason>`` lines (:mod:`visa.provisioning.report`). Edge cases: None (the default)
        when the cloud cannot say, or the server is gone; only the tail, at most
        ``REPORT_MAX_CHARS`` characters; may raise :class:`visa.errors.CloudError`, which
        callers treat as "nothing to report". The text comes from the machine: hostile.
        """
        return None

    def open_sftp(self, server_id: str) -> FileAccess | None:
        """An SFTP session on the machine as its owner's unix account (never root), for file
        transfers, when the provider reaches the machine without SSH.

        None (the default): the machine runs sshd, and visa logs in over SSH as the owner with
        its own key (pinned host key, forced to run ``sftp-server``). Edge cases: raises
        :class:`visa.errors.CloudError` when the machine is not running; the session speaks
        for a hostile machine: callers check every path and bound every answer.
        """
        return None

    def new_account(
        self, username: str, uid: int | None, taken_uids: Collection[int], taken_gids: Collection[int] = ()
    ) -> tuple[str, int] | None:
        """For a cloud that runs sessions as unix accounts of visa's own host: the account
        (name, uid) to make for a user who has none recorded, not made yet. The caller records it
        as the user's (the database's unique columns settle a race between two callers) and passes
        it as ``ServerSpec.account``; the provider never makes or adopts any other.

        ``uid``: the user's own uid at the facility, if known; ``taken_uids``: the uids other visa
        users have or were given (their ``uid_number``, their recorded account), which no account
        of this user's may have; ``taken_gids``: their gids, which a new uid (its private group's
        gid too) never takes. None (the
        default): the cloud makes no host accounts. Raises :class:`visa.errors.CloudError` when
        no account can be given (a uid that is another account's, no free uid left)."""
        return None

    def isolation(self) -> tuple[bool, str] | None:
        """For a cloud that runs sessions on visa's own machine: whether they are fully
        isolated (from visa and each other, limits enforced) and how, or why not.
        None (the default): every server is a machine of its own."""
        return None

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release connections and background resources."""
