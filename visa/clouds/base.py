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
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from visa.states import InstanceState

if TYPE_CHECKING:
    from visa.settings import Settings

# Metadata key and tag by which visa recognises its own servers in a shared cloud.
VISA_TAG = "visa"


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
    cores: int = 1
    memory_mb: int = 1024


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

    def activity_report(self, server_id: str) -> dict[str, Any] | None:
        """What the machine says of its use, when the provider can read it without SSH.

        Same fields as the SSH probe's report: ``x_idle_ms`` (or None), ``load``,
        ``cpu_count`` and ``processes`` ([{"pid", "command", "cpu_seconds"}], the user's
        own processes). None (the default): the scheduler asks the machine over SSH.
        """
        return None

    def isolation(self) -> tuple[bool, str] | None:
        """For a cloud that runs sessions on visa's own machine: whether they are fully
        isolated (from visa and each other, limits enforced) and how, or why not.
        None (the default): every server is a machine of its own."""
        return None

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release connections and background resources."""
