"""The OpenStack provider: Nova servers, with Glance images and Neutron networks, via openstacksdk.

Config keys (the Cloud row's config): :mod:`visa.clouds.openstack_config` types and checks them.

* how to reach the cloud: a ``clouds.yaml`` entry (``cloud``, ``clouds_yaml``), or ``auth_type``
  (``password``, ``v3applicationcredential``, ``token``) with its credentials, ``auth_url``;
  ``region_name``, ``interface``, ``cacert`` and ``verify``; secrets may be ``{"env": "VAR"}``;
* ``network``: name or id of the network servers are attached to; ``auto`` (the default:
  the project's only network) or ``none`` as Nova understands them;
* ``security_groups``: names given to every server (default none: the project's default); the
  network rules add theirs (``ServerSpec.security_groups``) at create and on running servers;
* ``name_prefix``: prepended to server names, so operators see visa's servers at a glance;
* ``timeout`` (seconds per HTTP request, default 30), ``page_size`` (servers per list page,
  default 0: the cloud's own, 1000 on a stock Nova);
* ``reboot_type``: ``SOFT`` (default) or ``HARD``;
* ``placement``: credentials for reading Placement (``capacity``), as a mapping of the keys
  above that differ (e.g. ``username``, ``password``, ``project_name``): Placement lets only
  admin or service accounts read providers, which visa's own project account rarely is.
  Without it visa asks with its own credentials, and a refusal means "capacity unknown".

Each method makes one try: a failure is a :class:`visa.errors.CloudError`, ``transient`` when
trying again may help; the callers retry (:mod:`visa.clouds.retry`, one deadline per call).

visa recognises its servers by the tag ``visa`` and the metadata key ``visa`` (holding the
instance uid): ``list_servers`` is one paginated ``GET /servers/detail?tags=visa``.
Every call counts its HTTP requests per service in :attr:`OpenStackProvider.http_calls`.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from keystoneauth1 import exceptions as ksa_exc
from openstack import exceptions as os_exc
from openstack.compute.v2 import server as _server

from visa.clouds.base import (
    DISK_GB,
    MEMORY_MB,
    REPORT_LINES,
    REPORT_MAX_CHARS,
    VCPU,
    VISA_TAG,
    Capacity,
    CatalogueItem,
    CloudLimits,
    HostCapacity,
    Pool,
    Provider,
    Server,
    ServerSpec,
)
from visa.clouds.openstack_config import ConnectionConfig, OpenStackConfig, parse_config
from visa.errors import CloudError, InvalidInput
from visa.states import InstanceState

log = logging.getLogger(__name__)
T = TypeVar("T")

# Nova rejects metadata keys or values longer than this.
METADATA_MAX = 255
# Placement 1.14: providers carry their root, so nested providers (a GPU's) count for their host.
PLACEMENT_MICROVERSION = "1.14"
# A cloud flavour's resources change when an operator edits it: read again after this long.
NEEDS_SECONDS = 300.0


def flavour_needs(vcpus: int, ram_mb: int, disk_gb: int, extra_specs: dict[str, Any]) -> dict[str, int]:
    """What Nova asks Placement for one server of a flavour: its cores, memory and disk, as
    overridden or extended by the ``resources[N]:<CLASS>=<amount>`` extra specs (a GPU as
    ``resources:CUSTOM_GPU_A40=1``, ``resources:VGPU=1`` or ``resources:PCI_DEVICE=1``)."""
    needs = {VCPU: int(vcpus or 0), MEMORY_MB: int(ram_mb or 0), DISK_GB: int(disk_gb or 0)}
    extra: dict[str, int] = {}
    for key, value in (extra_specs or {}).items():
        group, _, rc = str(key).partition(":")
        if not rc or not group.startswith("resources") or not group[len("resources"):].isalnum() and group != "resources":
            continue
        try:
            amount = int(str(value).strip())
        except ValueError:
            continue
        if group == "resources":
            needs[rc] = amount  # the unnumbered group replaces the flavour's own figure
        else:
            extra[rc] = extra.get(rc, 0) + amount  # granular groups come on top
    for rc, amount in extra.items():
        needs[rc] = needs.get(rc, 0) + amount
    return {rc: n for rc, n in needs.items() if n > 0}

_BY_STATUS = {
    "BUILD": InstanceState.BUILDING,
    "REBUILD": InstanceState.BUILDING,
    "ACTIVE": InstanceState.ACTIVE,
    "PASSWORD": InstanceState.ACTIVE,
    "REBOOT": InstanceState.REBOOTING,
    "HARD_REBOOT": InstanceState.REBOOTING,
    "RESCUE": InstanceState.UNAVAILABLE,
    "RESIZE": InstanceState.UNAVAILABLE,
    "REVERT_RESIZE": InstanceState.UNAVAILABLE,
    "VERIFY_RESIZE": InstanceState.UNAVAILABLE,
    "DELETED": InstanceState.DELETED,
    "SOFT_DELETED": InstanceState.DELETED,
    "SHELVED": InstanceState.DELETED,
    "SHELVED_OFFLOADED": InstanceState.DELETED,
    "PAUSED": InstanceState.STOPPED,
    "SHUTOFF": InstanceState.STOPPED,
    "SUSPENDED": InstanceState.STOPPED,
    "ERROR": InstanceState.ERROR,
}


def server_state(
    status: str | None, task_state: str | None = None, vm_state: str | None = None
) -> InstanceState:
    """Nova's status, task state and VM state as visa's cloud-level state.

    Beyond the status alone: a server being powered off is STOPPING, one being powered on
    is STARTING (the scheduler's port probe takes it on from ACTIVE), one being deleted is
    DELETING, and a live migration of a running server is ACTIVE_MIGRATING.
    """
    status = (status or "").upper()
    if task_state == "deleting" and status not in ("DELETED", "SOFT_DELETED"):
        return InstanceState.DELETING
    if status == "ACTIVE" and task_state == "powering-off":
        return InstanceState.STOPPING
    if status == "SHUTOFF" and task_state == "powering-on":
        return InstanceState.STARTING
    if status == "MIGRATING":
        return InstanceState.ACTIVE_MIGRATING if vm_state == "active" else InstanceState.MIGRATING
    return _BY_STATUS.get(status, InstanceState.UNKNOWN)


def fault_message(fault: dict[str, Any] | None) -> str | None:
    """A fault Nova recorded on a server, said so that a user understands it."""
    if not fault:
        return None
    message = str(fault.get("message") or "").strip()
    if "No valid host" in message:
        return f"No hypervisor can take this machine now (the cloud said: {message})"
    return message or f"the cloud reported fault {fault.get('code')}"


def _created_at(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _address(addresses: dict[str, list[dict[str, Any]]] | None, network: str | None) -> str | None:
    """The fixed IPv4 address on ``network`` (else on any network), else any address."""
    if not addresses:
        return None
    nets = [addresses[network]] if network in addresses else list(addresses.values())
    candidates = [a for net in nets for a in net]
    for kind in ("fixed", None):
        for a in candidates:
            if a.get("version") == 4 and (kind is None or a.get("OS-EXT-IPS:type") == kind):
                return str(a["addr"])
    return str(candidates[0]["addr"]) if candidates else None


def to_server(raw: Any, network_name: str | None = None) -> Server:
    """An openstacksdk server (or anything with its attributes) as a :class:`Server`."""
    metadata = dict(getattr(raw, "metadata", None) or {})
    task_state, vm_state = getattr(raw, "task_state", None), getattr(raw, "vm_state", None)
    fault = getattr(raw, "fault", None)
    groups = getattr(raw, "security_groups", None)
    return Server(
        id=raw.id,
        name=raw.name or "",
        state=server_state(raw.status, task_state, vm_state),
        address=_address(getattr(raw, "addresses", None), network_name),
        instance_uid=metadata.get(VISA_TAG),
        fault=fault_message(fault),
        created_at=_created_at(getattr(raw, "created_at", None)),
        # Nova's server details name the groups of its ports (none listed: no port, or none yet).
        security_groups=None if not isinstance(groups, list)
        else frozenset(str(g["name"]) for g in groups if isinstance(g, dict) and g.get("name")),
        provider_state={
            "status": raw.status,
            "task_state": task_state,
            "vm_state": vm_state,
            "power_state": getattr(raw, "power_state", None),
        },
    )


def translate(exc: BaseException, action: str, cloud: str) -> CloudError:
    """Any failure of the SDK as a CloudError a user can read; ``transient`` when a retry may help."""
    if isinstance(exc, CloudError):
        return exc
    where = f"cloud {cloud!r}"
    if isinstance(exc, ksa_exc.SSLError):
        # Not transient: a certificate does not become trusted by asking again.
        return CloudError(f"{where}: its TLS certificate was not accepted to {action} (give the CA bundle "
                          f"that signed it as cacert): {exc}", reason="tls")
    if isinstance(exc, ksa_exc.ConnectTimeout):
        return CloudError(f"{where} did not answer in time to {action}", transient=True, reason="timeout")
    if isinstance(exc, ksa_exc.ConnectionError | ksa_exc.RetriableConnectionFailure):
        return CloudError(f"{where} cannot be reached to {action}", transient=True, reason="unavailable")
    status: int | None = None
    text = str(exc)
    if isinstance(exc, os_exc.HttpException):
        status = exc.status_code
        text = str(exc.details or exc.message or exc)
    elif isinstance(exc, ksa_exc.HttpError):
        status = exc.http_status
        text = str(exc.details or exc.message or exc)
    lowered = text.lower()
    if status is not None and (status >= 500 or status in (408, 429)):
        return CloudError(
            f"{where} failed to {action} (HTTP {status}): {text}", transient=True, reason="unavailable"
        )
    if "quota exceeded" in lowered or ("quota" in lowered and status in (403, 413)):
        return CloudError(f"Quota exceeded on {where}: {text}", reason="quota_exceeded")
    if "no valid host" in lowered:
        return CloudError(
            f"No hypervisor on {where} can take this machine now: {text}", reason="no_valid_host"
        )
    # Keystone answers 404 for an application credential it does not know (deleted, rotated away).
    at_keystone = isinstance(exc, ksa_exc.HttpError) and "/auth/tokens" in str(getattr(exc, "url", "") or "")
    if status == 401 or (status == 404 and at_keystone):
        return CloudError(f"{where} refused visa's credentials (Keystone said: {text})", reason="auth")
    if status == 404:
        return CloudError(f"{where}: not found while trying to {action}: {text}", reason="not_found")
    if status == 409:
        return CloudError(f"{where} cannot {action} now: {text}", reason="conflict")
    if isinstance(exc, os_exc.ResourceTimeout):
        return CloudError(f"{where} took too long to {action}", transient=True, reason="timeout")
    return CloudError(f"{where} failed to {action}: {text}", reason="error")


def base_sources(sources: Collection[str]) -> list[str]:
    """Addresses or ranges as Neutron writes them (``10.0.0.5`` -> ``10.0.0.5/32``)."""
    return sorted({str(ipaddress.ip_network(s.strip(), strict=False)) for s in sources})


def rule_key(rule: Any) -> tuple[int, str] | None:
    """(port, source range) of a rule opening one TCP port to an address range; None for any other."""
    if rule.protocol not in ("tcp", "6") or rule.remote_group_id or not rule.remote_ip_prefix:
        return None
    if rule.port_range_min is None or rule.port_range_min != rule.port_range_max:
        return None
    try:
        return int(rule.port_range_min), str(ipaddress.ip_network(rule.remote_ip_prefix, strict=False))
    except ValueError:
        return None


def describe_rule(rule: Any) -> str:
    proto = (rule.protocol or "any protocol").upper()
    lo, hi = rule.port_range_min, rule.port_range_max
    ports = "all ports" if lo is None else (f"port {lo}" if lo == hi else f"ports {lo}-{hi}")
    source = rule.remote_ip_prefix or (f"group {rule.remote_group_id}" if rule.remote_group_id else "anywhere")
    return f"{proto} {ports} from {source}"


class OpenStackProvider(Provider):
    kind = "openstack"

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        super().__init__(name, config)
        # A stored configuration that no longer passes its checks fails every call, clearly.
        self.misconfigured: str | None = None
        try:
            self.settings = parse_config(config)
        except InvalidInput as exc:
            self.misconfigured = exc.message
            self.settings = OpenStackConfig.model_construct()
        self.timeout = self.settings.timeout
        self.page_size = self.settings.page_size
        self.name_prefix = self.settings.name_prefix
        self.network = self.settings.network or None
        self.group_names = list(self.settings.security_groups)
        self.reboot_type = self.settings.reboot_type
        # HTTP requests made, by host:port of the API (the benchmarks and tests read it).
        self.http_calls: Counter[str] = Counter()
        self._conn: Any = None
        self._placement_conn: Any = None
        self._ids: dict[tuple[str, str], str] = {}
        self._needs: dict[str, tuple[float, dict[str, int]]] = {}

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        parse_config(config)

    @classmethod
    def config_files(cls, config: dict[str, Any]) -> list[str]:
        if not config.get("cloud"):
            return []
        if config.get("clouds_yaml"):
            return [str(config["clouds_yaml"])]
        from openstack.config import loader

        return [*loader.CONFIG_FILES, *loader.SECURE_FILES]

    # ------------------------------------------------------------- plumbing

    @property
    def conn(self) -> Any:
        if self._conn is None:
            self._conn = self._connect(self.settings)
        return self._conn

    @property
    def placement_conn(self) -> Any:
        """The connection Placement is read with: its own credentials when configured."""
        if self.settings.placement is None:
            return self.conn
        if self._placement_conn is None:
            self._placement_conn = self._connect(self.settings.placement_connection())
        return self._placement_conn

    def _connect(self, cfg: ConnectionConfig) -> Any:
        """An openstacksdk connection (no request made yet: Keystone is asked at the first call)."""
        from openstack.config.loader import OpenStackConfig as SdkConfig
        from openstack.connection import Connection

        if self.misconfigured:
            raise CloudError(f"cloud {self.name!r} is misconfigured: {self.misconfigured}", reason="config")
        options: dict[str, Any] = {
            "auth_type": cfg.auth_type, "region_name": cfg.region_name, "interface": cfg.interface,
            "cacert": cfg.cacert, "verify": cfg.verify,
            "api_timeout": self.timeout,
            # Retries are the caller's, with one deadline per call (visa.clouds.retry).
            "connect_retries": 0, "status_code_retries": 0,
        }
        options = {k: v for k, v in options.items() if v is not None}
        auth = cfg.credentials()
        if auth:
            options["auth"] = auth
        if not cfg.cloud:
            options.setdefault("auth_type", "password")
            if options["auth_type"] in ("password", "v3applicationcredential") and (
                    auth.get("username") and not auth.get("user_domain_id")):
                auth.setdefault("user_domain_name", "Default")
            if auth.get("project_name") and not auth.get("project_domain_id"):
                auth.setdefault("project_domain_name", "Default")
        try:
            loader = SdkConfig(
                config_files=[cfg.clouds_yaml] if cfg.clouds_yaml else None,
                load_yaml_config=bool(cfg.cloud), load_envvars=False, app_name="visa",
            )
            region = loader.get_one(cloud=cfg.cloud, **options)
            conn = Connection(config=region)
        except Exception as exc:
            where = f" (clouds.yaml entry {cfg.cloud!r}{f' in {cfg.clouds_yaml}' if cfg.clouds_yaml else ''})" \
                if cfg.cloud else ""
            raise CloudError(f"cloud {self.name!r} cannot be configured{where}: {exc}", reason="config") from exc
        conn.session.session.hooks["response"].append(self._count)
        return conn

    def _count(self, response: Any, *args: Any, **kwargs: Any) -> None:
        self.http_calls[urlsplit(response.url).netloc] += 1

    def _call(self, action: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` once; any failure as a CloudError (``transient`` when a retry may help)."""
        try:
            return fn()
        except Exception as exc:
            raise translate(exc, action, self.name) from exc

    def _resolve(self, kind: str, ref: str, finder: Callable[[str], Any]) -> str:
        key = (kind, ref)
        if key not in self._ids:
            found = self._call(f"find {kind} {ref!r}", lambda: finder(ref))
            if found is None:
                raise CloudError(
                    f"{kind} {ref!r} does not exist on cloud {self.name!r}", reason=f"{kind}_not_found"
                )
            self._ids[key] = found.id
        return self._ids[key]

    # ------------------------------------------------------------- servers

    def create(self, spec: ServerSpec) -> Server:
        c = self.conn
        image_id = self._resolve(
            "image", spec.image_ref, lambda r: c.image.find_image(r, ignore_missing=True)
        )
        flavour_id = self._resolve(
            "flavour", spec.flavour_ref, lambda r: c.compute.find_flavor(r, ignore_missing=True)
        )
        attrs: dict[str, Any] = {
            "name": f"{self.name_prefix}{spec.name}",
            "image_id": image_id,
            "flavor_id": flavour_id,
            "metadata": self._metadata(spec),
            "tags": [VISA_TAG],
            "user_data": base64.b64encode(spec.user_data.encode()).decode() if spec.user_data else None,
        }
        if self.network in (None, "auto", "none"):
            # Nova's own words: the project's only network (or one made for it), or none.
            attrs["networks"] = self.network or "auto"
        else:
            net_id = self._resolve(
                "network", self.network, lambda r: c.network.find_network(r, ignore_missing=True)
            )
            attrs["networks"] = [{"uuid": net_id}]
        groups = list(dict.fromkeys([*self.group_names, *spec.security_groups]))
        if groups:
            attrs["security_groups"] = [{"name": g} for g in groups]
        attrs = {k: v for k, v in attrs.items() if v is not None}

        def attempt() -> Any:
            try:
                return c.compute.create_server(**attrs)
            except Exception as exc:
                # The request may have reached Nova before the connection broke: adopt
                # the server it made rather than make a second one.
                if translate(exc, "create", self.name).transient:
                    existing = self._find_by_uid(attrs["name"], spec.instance_uid)
                    if existing is not None:
                        return existing
                raise

        server = to_server(self._call(f"create server {attrs['name']!r}", attempt), self.network)
        # Nova's answer to a create carries no status yet: it is building.
        return (
            server
            if server.provider_state["status"]
            else dataclasses.replace(server, state=InstanceState.BUILDING)
        )

    def _metadata(self, spec: ServerSpec) -> dict[str, str]:
        metadata = {str(k): str(v) for k, v in spec.metadata.items()}
        metadata[VISA_TAG] = spec.instance_uid
        for key, value in metadata.items():
            if len(key) > METADATA_MAX or len(value) > METADATA_MAX:
                raise CloudError(
                    f"metadata {key!r} is longer than the {METADATA_MAX} characters OpenStack accepts",
                    reason="invalid_metadata",
                )
        return metadata

    def _find_by_uid(self, name: str, uid: str) -> Any:
        try:
            for raw in self.conn.compute.servers(details=True, tags=VISA_TAG, name=f"^{name}$"):
                if (raw.metadata or {}).get(VISA_TAG) == uid:
                    return raw
        except Exception:
            return None
        return None

    def get(self, server_id: str) -> Server | None:
        raw = self._call("get server", lambda: self._get_or_none(server_id))
        return None if raw is None else to_server(raw, self.network)

    def _get_or_none(self, server_id: str) -> Any:
        try:
            return self.conn.compute.get_server(server_id)
        except os_exc.NotFoundException:
            return None

    def boot_report(self, server_id: str) -> str | None:
        """The tail of the server's console log (Nova's ``os-getConsoleOutput``)."""

        def read() -> str | None:
            try:
                answer = self.conn.compute.get_server_console_output(server_id, length=REPORT_LINES)
            except os_exc.NotFoundException:
                return None
            output = (answer or {}).get("output") if isinstance(answer, dict) else None
            return None if output is None else str(output)[-REPORT_MAX_CHARS:]

        return self._call("read console", read)

    def list_servers(self) -> list[Server]:
        # Materialised inside one try, so that a failure on page N starts over instead
        # of returning a partial list (which the reconcile would take for lost servers).
        raws = self._call("list servers", self._list_pages)
        return [to_server(raw, self.network) for raw in raws]

    def _list_pages(self) -> list[Any]:
        """``GET /servers/detail?tags=visa``, following Nova's next links.

        Paginated by hand: openstacksdk asks for one more (empty) page whenever a limit
        is given. Here a sync of N servers costs ceil(N / page) requests, one under Nova's
        page size.
        """
        from openstack.compute.v2.server import Server as SdkServer

        compute = self.conn.compute
        microversion = SdkServer._get_microversion(compute)
        params: dict[str, Any] = {"tags": VISA_TAG}
        if self.page_size:
            params["limit"] = self.page_size
        url: str | None = "/servers/detail"
        found: list[Any] = []
        while url:
            response = compute.get(url, params=params, microversion=microversion)
            os_exc.raise_from_response(response)
            body = response.json()
            found.extend(SdkServer.existing(connection=self.conn, **raw) for raw in body.get("servers", []))
            url = None
            for link in body.get("servers_links", []):
                if link.get("rel") == "next":
                    parts = urlsplit(link["href"])
                    params = dict(parse_qsl(parts.query))
                    # Keep the path under the endpoint (the link is absolute).
                    url = "/servers/detail"
        return found

    def _action(self, action: str, server_id: str, run: Callable[[], Any], done: set[InstanceState]) -> None:
        """Run a server action; a conflict is success when the server is already where asked."""
        try:
            self._call(f"{action} server", run)
        except CloudError as error:
            if error.details.get("reason") not in ("conflict", "not_found"):
                raise
            current = self.get(server_id)
            if current is None:
                raise CloudError(
                    f"server {server_id} no longer exists on cloud {self.name!r}", reason="not_found"
                ) from error
            if current.state not in done:
                raise

    def start(self, server_id: str) -> None:
        self._action(
            "start",
            server_id,
            lambda: self.conn.compute.start_server(server_id),
            {InstanceState.ACTIVE, InstanceState.STARTING, InstanceState.REBOOTING},
        )

    def stop(self, server_id: str) -> None:
        self._action(
            "stop",
            server_id,
            lambda: self.conn.compute.stop_server(server_id),
            {InstanceState.STOPPED, InstanceState.STOPPING, InstanceState.DELETING, InstanceState.DELETED},
        )

    def reboot(self, server_id: str) -> None:
        """Reboot; a stopped server is started instead (it ends up running, as asked)."""
        current = self.get(server_id)
        if current is None:
            raise CloudError(
                f"server {server_id} no longer exists on cloud {self.name!r}", reason="not_found"
            )
        if current.state in (InstanceState.STOPPED, InstanceState.STOPPING):
            self.start(server_id)
            return
        self._action(
            "reboot",
            server_id,
            lambda: self.conn.compute.reboot_server(server_id, self.reboot_type),
            {InstanceState.REBOOTING},
        )

    def delete(self, server_id: str) -> None:
        try:
            self._call(
                "delete server", lambda: self.conn.compute.delete_server(server_id, ignore_missing=True)
            )
        except CloudError as error:
            if error.details.get("reason") != "conflict":
                raise
            current = self.get(server_id)
            if current is not None and current.state not in (InstanceState.DELETING, InstanceState.DELETED):
                raise

    # ------------------------------------------------------------- catalogue

    def images(self) -> list[CatalogueItem]:
        raws = self._call("list images", lambda: list(self.conn.image.images()))
        return [
            CatalogueItem(
                i.id,
                i.name or "",
                {"status": i.status, "min_disk": i.min_disk, "size": i.size, "visibility": i.visibility},
            )
            for i in raws
        ]

    def flavours(self) -> list[CatalogueItem]:
        raws = self._call("list flavours", lambda: list(self.conn.compute.flavors(details=True)))
        return [
            CatalogueItem(
                f.id,
                f.name,
                {
                    "cores": f.vcpus,
                    "memory_mb": f.ram,
                    "disk_gb": f.disk,
                    "extra_specs": dict(f.extra_specs or {}),
                },
            )
            for f in raws
        ]

    def networks(self) -> list[CatalogueItem]:
        raws = self._call("list networks", lambda: list(self.conn.network.networks()))
        return [
            CatalogueItem(
                n.id, n.name or "", {"shared": n.is_shared, "status": n.status, "subnets": list(n.subnet_ids)}
            )
            for n in raws
        ]

    def security_groups(self) -> list[CatalogueItem]:
        raws = self._call("list security groups", lambda: list(self.conn.network.security_groups()))
        return [CatalogueItem(g.id, g.name or "", {"description": g.description or ""}) for g in raws]

    def limits(self) -> CloudLimits:
        absolute = self._call("read limits", lambda: self.conn.compute.get_limits().absolute)

        def cap(value: int | None) -> int | None:
            return None if value is None or value < 0 else int(value)

        return CloudLimits(
            max_instances=cap(absolute.instances),
            max_cores=cap(absolute.total_cores),
            max_memory_mb=cap(absolute.total_ram),
            used_instances=int(absolute.instances_used or 0),
            used_cores=int(absolute.total_cores_used or 0),
            used_memory_mb=int(absolute.total_ram_used or 0),
        )

    # ------------------------------------------------------------- capacity

    def needs(self, flavour_ref: str, cores: int, memory_mb: int) -> dict[str, int]:
        """From Nova's flavour (cached a few minutes): what Placement will be asked for."""
        hit = self._needs.get(flavour_ref)
        if hit is not None and time.monotonic() - hit[0] < NEEDS_SECONDS:
            return hit[1]
        found = self._call(
            f"find flavour {flavour_ref!r}",
            lambda: self.conn.compute.find_flavor(flavour_ref, ignore_missing=True, get_extra_specs=True),
        )
        if found is None:
            raise CloudError(
                f"flavour {flavour_ref!r} does not exist on cloud {self.name!r}", reason="flavour_not_found"
            )
        needs = flavour_needs(found.vcpus, found.ram, (found.disk or 0) + (found.ephemeral or 0),
                              dict(found.extra_specs or {}))
        self._needs[flavour_ref] = (time.monotonic(), needs)
        return needs

    def capacity(self) -> Capacity:
        """Placement's inventories and usages, per provider tree (one host with its children).

        One list of providers, then two reads per provider (inventories, usages): Placement
        has no call that gives both for all. Callers cache the answer.
        """
        return self._call("read placement", self._read_placement)

    def _read_placement(self) -> Capacity:
        placement = self.placement_conn.placement

        def get(url: str) -> dict[str, Any]:
            response = placement.get(url, microversion=PLACEMENT_MICROVERSION)
            os_exc.raise_from_response(response)
            return dict(response.json())

        providers = get("/resource_providers").get("resource_providers", [])
        names = {p["uuid"]: p.get("name") or p["uuid"] for p in providers}
        trees: dict[str, dict[str, Pool]] = {}
        for p in providers:
            inventories = get(f"/resource_providers/{p['uuid']}/inventories").get("inventories", {})
            if not inventories:
                continue
            usages = get(f"/resource_providers/{p['uuid']}/usages").get("usages", {})
            pools = trees.setdefault(p.get("root_provider_uuid") or p["uuid"], {})
            for rc, inv in inventories.items():
                total = int((int(inv.get("total", 0)) - int(inv.get("reserved", 0)))
                            * float(inv.get("allocation_ratio", 1.0)))
                seen = pools.get(rc)
                max_unit = int(inv.get("max_unit", total))
                pools[rc] = Pool(
                    total=max(0, total) + (seen.total if seen else 0),
                    used=int(usages.get(rc, 0)) + (seen.used if seen else 0),
                    max_unit=max(max_unit, seen.max_unit or 0) if seen else max_unit,
                )
        return Capacity(tuple(HostCapacity(names.get(root, root), pools) for root, pools in sorted(trees.items())))

    # ------------------------------------------------------------- security groups

    def server_security_groups(self, server_id: str) -> set[str]:
        """Nova's ``GET /servers/{id}/os-security-groups``: the groups of all the server's ports."""

        def read() -> set[str]:
            try:
                found = _server.Server(id=server_id).fetch_security_groups(self.conn.compute)
            except os_exc.NotFoundException:
                return set()
            return {str(g.get("name")) for g in (found.security_groups or []) if g.get("name")}

        return self._call("list the server's security groups", read)

    def _group_action(self, verb: str, server_id: str, group: str) -> None:
        """Nova's ``addSecurityGroup`` / ``removeSecurityGroup``; a repeat is no error."""
        server = _server.Server(id=server_id)
        run = server.add_security_group if verb == "add" else server.remove_security_group
        action = f"{verb} security group {group!r}"
        try:
            self._call(action, lambda: run(self.conn.compute, group))
        except CloudError as error:
            if error.details.get("reason") not in ("not_found", "error", "conflict"):
                raise
            have = self.server_security_groups(server_id)
            if (group in have) == (verb == "add"):
                return  # Nova refuses a group the server already has (or lacks): done all the same
            if verb == "add" and error.details.get("reason") == "not_found" and self.get(server_id) is not None:
                raise CloudError(f"security group {group!r} does not exist on cloud {self.name!r}",
                                 reason="security_group_not_found") from error
            raise

    def add_security_group(self, server_id: str, group: str) -> None:
        self._group_action("add", server_id, group)

    def remove_security_group(self, server_id: str, group: str) -> None:
        self._group_action("remove", server_id, group)

    def base_group_report(self, group: str, ports: Collection[int], sources: Collection[str], *,
                          create: bool = False) -> list[str]:
        """Neutron's group of that name in visa's project and its ingress rules (egress is left alone)."""
        return self._call(f"check security group {group!r}",
                          lambda: self._base_group(group, sorted(set(ports)), base_sources(sources), create))

    def _base_group(self, name: str, ports: list[int], sources: list[str], create: bool) -> list[str]:
        net = self.conn.network
        project = self.conn.current_project_id
        found = list(net.security_groups(name=name, project_id=project))
        if len(found) > 1:
            return [f"security group {name!r}: {len(found)} groups have this name in visa's project; keep one"]
        lines: list[str] = []
        if not found:
            if not create:
                return [f"security group {name!r} is missing (create it with --create)"]
            sg = net.create_security_group(
                name=name, description="visa: desktop, Jupyter and SSH ports from visa's gateway and probe only"
            )
            lines.append(f"created security group {name!r}")
        else:
            sg = found[0]
        wanted = {(port, cidr) for port in ports for cidr in sources}
        have: set[tuple[int, str]] = set()
        for rule in net.security_group_rules(security_group_id=sg.id, direction="ingress"):
            key = rule_key(rule)
            if key is not None and key in wanted and key not in have:
                have.add(key)
                continue
            text = f"too open: {describe_rule(rule)}"
            if create:
                net.delete_security_group_rule(rule.id)
                lines.append(f"deleted rule ({text})")
            else:
                lines.append(f"security group {name!r} is {text}")
        for port, cidr in sorted(wanted - have):
            if create:
                net.create_security_group_rule(
                    security_group_id=sg.id, direction="ingress", protocol="tcp", port_range_min=port,
                    port_range_max=port, remote_ip_prefix=cidr,
                    ethertype="IPv6" if ":" in cidr else "IPv4",
                )
                lines.append(f"added rule: TCP {port} from {cidr}")
            else:
                lines.append(f"security group {name!r} lacks TCP {port} from {cidr}")
        return lines

    def close(self) -> None:
        if self._placement_conn is not None:
            self._placement_conn.close()
            self._placement_conn = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
