"""One typed settings object for the whole service.

Values come, in order of precedence, from ``VISA_*`` environment variables (nested
fields with ``__``, e.g. ``VISA_SMTP__HOST``), an optional TOML file named by
``VISA_CONFIG``, then the defaults written here. The defaults are the embedded
setup: SQLite in the data directory, the local provider and local accounts.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class LifetimeSettings(BaseModel):
    """Defaults that apply when no flavour/role rule overrides them (hours)."""

    user_max_hours: int = Field(14 * 24, ge=1, description="Maximum lifetime for users")
    staff_max_hours: int = Field(60 * 24, ge=1, description="Maximum lifetime for staff (ADMIN, STAFF)")
    user_inactivity_hours: int = Field(4 * 24, ge=1, description="Inactivity limit for users")
    staff_inactivity_hours: int = Field(8 * 24, ge=1, description="Inactivity limit for staff")
    lifetime_warning_hours: int = Field(48, ge=1, description="Warn this long before a lifetime deletion")
    inactivity_warning_hours: int = Field(24, ge=1, description="Warn this long before an inactivity deletion")
    untouched_tab_hours: int = Field(6, ge=1, description="An open tab with no input counts as idle after this")


class SmtpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(25, ge=1, le=65535)
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password: str | None = None
    sender: str = "visa@localhost"
    enabled: bool = False


class OidcSettings(BaseModel):
    """The OpenID Connect provider: any one, by its issuer (discovery), or Keycloak by server and realm."""

    issuer: str | None = Field(
        None,
        description="The provider's issuer, e.g. https://aai.egi.eu/auth/realms/egi (empty: local accounts, "
        "unless server_url is set). visa reads <issuer>/.well-known/openid-configuration for the endpoints, "
        "keys, end-session and refresh",
    )
    server_url: str | None = Field(
        None,
        description="Keycloak's shorthand for the issuer <browser_url or server_url>/realms/<realm>, e.g. "
        "https://sso.example.org/. The back channel: where visa's processes fetch discovery, tokens, keys "
        "and user info",
    )
    browser_url: str | None = Field(
        None,
        description="With server_url: the front channel, Keycloak's address as browsers reach it, for the "
        "login and logout redirects and the tokens' issuer (default: server_url). Set it when visa reaches "
        "Keycloak by another name, e.g. http://keycloak:8080/ inside Compose and http://sso.localhost:8180/ "
        "outside",
    )
    realm: str = Field("visa", description="With server_url: the Keycloak realm")
    name: str | None = Field(
        None, max_length=60,
        description="The provider's name on the login page's button (default: the realm, or the issuer's host)",
    )
    client_id: str = "visa"
    client_secret: str | None = None
    audience: str | None = Field(None, description="Expected 'aud' of bearer tokens (default: client_id)")
    role_claim: str | None = Field(
        None,
        description="Claim holding roles, as a dotted path: realm_access.roles (Keycloak), "
        "eduperson_entitlement (research federations); a list or a space-separated string",
    )
    role_mapping: dict[str, str] = Field(
        default_factory=dict,
        description="Claim value -> visa role (ADMIN, STAFF, ...). A value with * matches any run of characters, "
        "e.g. urn:mace:egi.eu:group:vo.example.eu:role=manager#* (values no entry matches give no role)",
    )
    user_group_claim: str | None = Field(
        None,
        description="Claim holding the user's groups (visa's user groups, which flavour limits, lifetimes and "
        "network rules name), as a dotted path, e.g. groups; read at each login: the groups it names are the "
        "user's, beside those administrators add",
    )
    verify_tls: bool = True
    refresh_seconds: int = Field(
        300, ge=10, le=86400,
        description="A session is refreshed at the provider at least this often: its roles are read again, "
        "and it ends if the provider ended it",
    )
    uid_claim: str | None = Field(None, description="Claim holding the user's uid, e.g. uidNumber (LDAP-mapped)")
    gid_claim: str | None = Field(None, description="Claim holding the user's primary gid, e.g. gidNumber")
    groups_claim: str | None = Field(
        None, description="Claim holding the user's supplementary gids (a list, or a space/comma separated string)"
    )
    home_claim: str | None = Field(None, description="Claim holding the user's home path, e.g. homeDirectory")
    token_scope: str = Field(
        "visa:tokens", min_length=1, max_length=100, pattern=r"^[!#-\[\]-~]+$",
        description="Scope an OIDC access token must carry to create long-lived API tokens",
    )

    @field_validator("issuer", "server_url", "browser_url")
    @classmethod
    def _http_url(cls, value: str | None, info: Any) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"oidc.{info.field_name}: {value!r} is not an http(s) URL without query or fragment")
        return value

    @field_validator("role_claim", "uid_claim", "gid_claim", "groups_claim", "home_claim", "user_group_claim")
    @classmethod
    def _claim_path(cls, value: str | None, info: Any) -> str | None:
        if value is not None and not re.fullmatch(r"[^.\s]+(\.[^.\s]+)*", value):
            raise ValueError(f"oidc.{info.field_name}: {value!r} is not a claim name or dotted path (a.b.c)")
        return value

    @field_validator("role_mapping")
    @classmethod
    def _visa_roles(cls, mapping: dict[str, str]) -> dict[str, str]:
        from visa.policy.roles import Role

        known = [r.value for r in Role]
        out = {}
        for value, role in mapping.items():
            if not value or value.strip("*") == "":
                raise ValueError(f"oidc.role_mapping: {value!r} would match every claim value: name one")
            if role.upper() not in known:
                raise ValueError(f"oidc.role_mapping: {value!r} maps to {role!r}, not a visa role "
                                 f"(one of {', '.join(known)})")
            out[value] = role.upper()
        return out

    @model_validator(mode="after")
    def _one_provider(self) -> OidcSettings:
        if self.issuer and self.server_url:
            raise ValueError("oidc: set issuer (any provider) or server_url and realm (Keycloak's shorthand), "
                             "not both")
        if self.browser_url and not self.server_url:
            raise ValueError("oidc.browser_url goes with server_url (Keycloak's shorthand); with issuer, browsers "
                             "use the addresses of the discovery document")
        if self.role_mapping and not self.role_claim:
            raise ValueError("oidc.role_mapping needs oidc.role_claim: the claim whose values it maps")
        return self

    @property
    def enabled(self) -> bool:
        """Whether users log in at the provider (else with local accounts)."""
        return bool(self.issuer or self.server_url)

    @property
    def keycloak(self) -> bool:
        """Configured by Keycloak's shorthand: its back-channel logout may be used."""
        return bool(self.server_url)

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        return self.realm if self.keycloak else urlsplit(self.issuer or "").hostname or "identity provider"

    @property
    def frontchannel_base(self) -> str:
        """Keycloak's base URL as browsers reach it, ending with a slash."""
        return (self.browser_url or self.server_url or "").rstrip("/") + "/"

    @property
    def issuer_url(self) -> str:
        """The issuer tokens name: ``issuer``, or the realm at the browser-facing address, as Keycloak
        names itself when its hostname is set (KC_HOSTNAME), whichever address visa fetched the token from."""
        if self.issuer:
            return self.issuer
        return f"{self.frontchannel_base}realms/{self.realm}"

    @property
    def discovery_url(self) -> str:
        """Where visa's processes read the provider's discovery document (the back channel)."""
        if self.issuer:
            return self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        return f"{(self.server_url or '').rstrip('/')}/realms/{self.realm}/.well-known/openid-configuration"


# Where a unix identity may come from (``visa.users.service.SOURCES``).
PosixSource = Literal["oidc", "import", "cli", "admin"]
# The system's own directories: a home is never one of them nor inside one (a home share mounted
# there, on a machine where root runs what it holds, would make its owner root).
SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/opt", "/proc", "/root",
               "/run", "/sbin", "/snap", "/sys", "/tmp", "/usr", "/var")


def system_dir(path: str) -> str | None:
    """The system directory ``path`` is or lies in (``/`` for the root itself), else None."""
    if path.rstrip("/") == "":
        return "/"
    return next((d for d in SYSTEM_DIRS if path == d or path.startswith(d + "/")), None)


def home_refusal(path: str, roots: list[str]) -> str | None:
    """Why a normalised absolute home path is refused (a system directory, not strictly inside
    one of ``roots``), else None."""
    if (sysdir := system_dir(path)) is not None:
        return f"{path} is a system directory ({sysdir}) or inside one: refused"
    if not any(path.startswith(root.rstrip("/") + "/") for root in roots):
        return f"{path} is not inside one of posix.home_roots ({', '.join(roots)})"
    return None


class PosixSettings(BaseModel):
    """Users' unix identities (uid, gid, groups, home), from the identity provider, the user-office
    import, ``visa users set-posix`` or the admin page, the first of them that has them. Only the
    sources named in ``sources`` count, and only within the bounds below."""

    min_uid: int = Field(1000, ge=1, le=2**31 - 2, description="Lowest uid a user may have: below is the system's")
    min_gid: int = Field(
        1000, ge=1, le=2**31 - 2, description="Lowest gid of a user's primary or supplementary group"
    )
    max_gid: int = Field(
        60000, ge=1, le=2**31 - 2,
        description="Highest gid of a user's primary or supplementary group (login.defs' GID_MAX): "
        "above lie reserved ones such as nogroup 65534",
    )
    home_roots: list[str] = Field(
        default_factory=lambda: ["/home"], min_length=1,
        description="Directories every user's home must lie strictly inside; system directories "
        "(/etc, /usr, /var, /root, ...) are refused whatever this says",
    )
    sources: list[PosixSource] = Field(
        default_factory=lambda: ["import", "cli", "admin"],
        description="Sources trusted for unix identities: add oidc only where the identity provider's "
        "uid, gid, group and home attributes are the facility's directory and users cannot edit them",
    )
    require_uid: Literal["auto", "always", "never"] = Field(
        "auto",
        description="When a user without a uid and gid is refused a machine with data or a home share: "
        "auto when the cloud mounts shared storage (nfs, ceph), always, or never",
    )

    @field_validator("home_roots")
    @classmethod
    def _home_roots(cls, roots: list[str]) -> list[str]:
        import posixpath

        for root in roots:
            if not root.startswith("/") or posixpath.normpath(root) != root:
                raise ValueError(f"home_roots: {root!r} is not a normalised absolute path")
            if (sysdir := system_dir(root)) is not None:
                raise ValueError(f"home_roots: {root!r} is a system directory ({sysdir}) or inside one")
        return roots

    @model_validator(mode="after")
    def _gid_range(self) -> PosixSettings:
        if self.max_gid < self.min_gid:
            raise ValueError(f"max_gid {self.max_gid} is below min_gid {self.min_gid}")
        return self


class SharingSettings(BaseModel):
    """Working together on one machine: members other than the owner act as the owner inside it."""

    shared_instance_home: Literal["own", "shared"] = Field(
        "own",
        description="Where a USER or SUPPORT member may act (type, move files): own, only in a machine "
        "created with a home of its own (in one on the owner's shared home they only watch, and no "
        "USER member is let in); shared, also on the owner's home shared by all their machines, "
        "accepting that what a member leaves there runs as the owner in their other machines. "
        "Recorded on each instance at its creation",
    )


class ImportSourceSettings(BaseModel):
    """Where the facility's extractor serves the user office's export: a command's output or a URL."""

    model_config = ConfigDict(extra="forbid")

    command: list[str] | None = Field(
        None, min_length=1, description="A program and its arguments (no shell), run as visa's account; "
        "its standard output is the export"
    )
    url: str | None = Field(None, description="An http(s) URL answering the export to a GET")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Headers of the GET (e.g. Authorization); never logged"
    )
    format: Literal["json", "csv"] = Field("json", description="What the export is written in")
    timeout_seconds: float = Field(120, gt=0, le=3600, description="The command or the GET is given up after this")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and (urlsplit(value).scheme not in {"http", "https"} or not urlsplit(value).hostname):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _one(self) -> ImportSourceSettings:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either command or url")
        return self


class ExperimentsSettings(BaseModel):
    """The user office's export, imported on a schedule (``visa experiments import`` without a file)."""

    import_source: ImportSourceSettings | None = Field(
        None, description="The extractor's command or URL; none: experiments come only from `visa experiments import FILE`"
    )
    import_seconds: int = Field(3600, ge=60, description="How often the scheduler imports from import_source")


class SchedulerSettings(BaseModel):
    """Periods of the background jobs, in seconds."""

    enabled_in_web: bool = Field(True, description="Run the scheduler inside `visa run` (embedded setup)")
    sync_seconds: int = Field(60, ge=1)
    unstable_sync_seconds: int = Field(5, ge=1)
    lifecycle_seconds: int = Field(300, ge=1)
    activity_seconds: int = Field(300, ge=1)
    cleanup_seconds: int = Field(86400, ge=1)
    # Emails whose sender died between the decision and the send (the rest go at once).
    outbox_seconds: int = Field(60, ge=1)
    orphan_grace_hours: int = Field(24, ge=0)
    warm_seconds: int = Field(
        30, ge=1, description="How often the warm pools are checked and refilled (plans' `warm` in the catalogue)"
    )
    usage_seconds: int = Field(300, ge=10, description="How often instance counts and resources in use are sampled")
    usage_keep_days: int = Field(35, ge=1, description="How long usage samples are kept (the job prunes older ones)")
    lease_seconds: int = Field(30, ge=5)
    command_concurrency: int = Field(
        4, ge=1, le=64, description="Commands a process runs at once on one cloud (a hung cloud stalls only its own)"
    )
    cloud_call_seconds: float = Field(
        60.0, gt=0, le=3600, description="A cloud call, with its retries of transient failures, starts no try "
        "after this long (then it fails; the command frees its cloud slot)"
    )
    command_heartbeat_seconds: float = Field(
        5.0, gt=0, le=300, description="How often a process says it still runs the commands it claimed"
    )
    command_missed_heartbeats: int = Field(
        3, ge=2, le=100, description="Heartbeats missed after which a running command is given to another process"
    )
    metrics_host: str = Field("127.0.0.1", description="Address of `visa scheduler`'s /metrics and /health")
    metrics_port: int = Field(
        9464, ge=0, le=65535, description="Port of `visa scheduler`'s /metrics and /health (0: not served)"
    )


class NetworkSettings(BaseModel):
    """Who may reach the servers' ports, and how often the network rules are applied to running servers."""

    base_group: str | None = Field(
        None,
        description="Security group given to every server at create, opening the desktop, Jupyter and SSH ports "
        "to `access_from` only (`visa clouds secure-network` checks and creates it); none: not given",
    )
    access_from: list[str] = Field(
        default_factory=list,
        description="Addresses or ranges (CIDR) of visa's gateway and activity probe, as the servers see them",
    )
    ssh_port: int = Field(22, ge=1, le=65535, description="The servers' SSH port (the activity probe, file transfers)")
    rules_seconds: int = Field(
        300, ge=10, description="How often the network rules are applied to running servers (roles, memberships, "
        "beamtime)"
    )

    @field_validator("access_from")
    @classmethod
    def _ranges(cls, value: list[str]) -> list[str]:
        for i, item in enumerate(value):
            try:
                ipaddress.ip_network(item.strip(), strict=False)
            except ValueError:
                raise ValueError(f"item {i + 1} ({item[:64]!r}) is not an address or CIDR range") from None
        return value


class BookingSettings(BaseModel):
    """GPU bookings: the days a booking may cover around the beamtime it serves, and how far ahead
    the calendar looks."""

    beamtime_margin_days: int = Field(
        7, ge=0, le=365,
        description="A booking may start this many days before its experiment's beamtime and end this many after",
    )
    horizon_days: int = Field(
        180, ge=1, le=3650, description="How far ahead bookings may be made, and the create page looks for a free day",
    )
    max_days: int = Field(31, ge=1, le=3650, description="The longest booking, in days")


class DatabasePoolSettings(BaseModel):
    """The connection pool of each process (PostgreSQL; SQLite opens connections as needed).

    A process holds at most ``size + max_overflow`` connections: docs/operations.md adds them up
    per process kind against PostgreSQL's ``max_connections``."""

    size: int = Field(5, ge=1, le=1000, description="Connections kept open")
    max_overflow: int = Field(5, ge=0, le=1000, description="Extra connections opened under load, closed after")
    timeout_seconds: float = Field(10.0, gt=0, description="Wait this long for a free connection, then fail")
    recycle_seconds: int = Field(
        1800, ge=-1, description="Reopen connections older than this (-1: never); below any idle cut-off on the way"
    )


class GatewaySettings(BaseModel):
    """Where the desktop relay (/ws/) and the instances' web proxies (the user-content hosts) run."""

    embedded: bool = Field(
        True,
        description="Serve them in the web process (`visa run`); false when `visa gateway` runs apart "
        "and nginx routes /ws/ and the user-content domain to it",
    )
    host: str = Field("127.0.0.1", description="Address `visa gateway` listens on")
    port: int = Field(8081, ge=1, le=65535, description="Port `visa gateway` listens on")
    # What one user or one instance may hold of a gateway process (each worker counts its own).
    # JupyterLab opens a websocket per kernel, terminal and shared document, and one for events.
    connects_per_minute: int = Field(
        30, ge=1, description="Desktop connect tokens a user may ask for per minute (per web process); then 429"
    )
    max_connections_per_user: int = Field(
        48, ge=1, description="Desktop and JupyterLab websockets one user may hold open at once; then refused (429)"
    )
    max_connections_per_instance: int = Field(
        64, ge=1, description="Desktop and JupyterLab websockets open to one instance at once; then refused (503)"
    )
    jupyter_connections_per_instance: int = Field(
        32, ge=1, le=1024, description="HTTP connections to one instance's Jupyter at once; more requests wait"
    )
    jupyter_wait_seconds: float = Field(
        10, gt=0, description="How long a Jupyter request waits for one of its instance's connections; then 503"
    )
    jupyter_requests_per_lab: int = Field(
        64, ge=1, description="Jupyter requests one lab (browser) may have in progress or waiting; then 429"
    )
    jupyter_idle_seconds: float = Field(
        300, gt=0, description="A Jupyter answer that sends nothing for this long is cut off (504 if none began)"
    )
    jupyter_page_bytes: int = Field(
        16 * 1024**2, ge=65536, description="Largest JupyterLab page decoded to remove its token; longer is cut"
    )
    upstream_pools: int = Field(
        1024, ge=1, description="Instances whose Jupyter connections are kept open; the least recently used go"
    )


class CvmfsDomainSettings(BaseModel):
    """Where the repositories of one CVMFS domain are served from and signed by."""

    server_urls: list[str] = Field(description="Stratum-1 URLs; @fqrn@ stands for the repository name")
    keys_dir: str = Field(description="Directory of the domain's public keys in the image")
    public_key: str | None = Field(None, description="PEM public key written to keys_dir at boot (optional)")


class ProvisioningSettings(BaseModel):
    """Site configuration for what a machine receives at boot (rendered into cloud-init).

    Images add to it through their ``options`` (see ``visa.provisioning.site.ImageOptions``).
    A cloud's own ``provisioning`` settings are checked by this model too, over the site's.
    """

    # A misspelt key would leave the default in force, silently: refused, in the site's file as
    # in a cloud's settings.
    model_config = ConfigDict(extra="forbid")

    # --- CVMFS -------------------------------------------------------------------------
    cvmfs_repositories: list[str] = Field(
        default_factory=lambda: ["software.esrf.fr", "software.eessi.io"],
        description="CVMFS repositories mounted on every machine (images may add more)",
    )
    cvmfs_http_proxy: str = Field("DIRECT", description="CVMFS_HTTP_PROXY, e.g. http://squid.esrf.fr:3128")
    cvmfs_quota_mb: int = Field(20000, ge=1000, description="Local CVMFS cache size (CVMFS_QUOTA_LIMIT)")
    cvmfs_domains: dict[str, CvmfsDomainSettings] = Field(
        default_factory=lambda: {
            "esrf.fr": CvmfsDomainSettings(
                server_urls=["http://cvmfs-stratum1.esrf.fr/cvmfs/@fqrn@"],
                keys_dir="/etc/cvmfs/keys/esrf.fr",
            )
        },
        description="Domains not covered by the image's cvmfs-config packages (EESSI, CERN ship their own)",
    )
    # --- Experiment data ---------------------------------------------------------------
    data_root: str = Field("/data/visitor", description="Where raw data appears in the machine, ESRF style")
    processed_root: str = Field("/data/processed", description="Where the writable processed-data areas appear")
    raw_mount_template: str = Field(
        "nfs-data.esrf.fr:/data/visitor/{proposal}/{beamline}",
        description="Source of an experiment's raw data; {proposal} and {beamline} are substituted",
    )
    processed_mount_template: str = Field(
        "nfs-data.esrf.fr:/data/processed/{proposal}/{beamline}",
        description="Source of the writable processed-data area",
    )
    mount_type: str = Field("nfs", description="nfs, ceph or bind (bind: local provider, sources are host paths)")
    nfs_options: str = Field(
        "nfsvers=4.2,hard,_netdev,nofail,x-systemd.automount", description="fstab options added to NFS mounts"
    )
    ceph_options: str = Field(
        "name=visa,secretfile=/etc/ceph/visa.secret,_netdev,nofail,x-systemd.automount",
        description="fstab options added to CephFS mounts",
    )
    # --- Accounts ----------------------------------------------------------------------
    home_root: str = Field("/home", description="Home directories when the account source gives none")
    home_mount_template: str | None = Field(
        None,
        description="Source of each user's persistent home share, mounted at their home on every machine "
        "of theirs, e.g. nfs-home.esrf.fr:/homes/{username}; {username} and {uid} are substituted. "
        "None: the home lives and dies with the machine",
    )
    home_mount_root: str | None = Field(
        None,
        description="What every rendered home source must lie inside, e.g. nfs-home.esrf.fr:/homes "
        "(required with home_mount_template)",
    )
    user_shell: str = "/bin/bash"
    probe_username: str = Field("visa", description="Account the scheduler uses over SSH to read activity")
    assign_username: str = Field(
        "visa-assign", description="Account of a warm machine whose key may only run the assignment helper "
        "(the owner given to an already booted machine)"
    )
    probe_public_key: str | None = Field(
        None, description="OpenSSH public key of the probe account (one line); none: no probe account"
    )
    # --- Desktop, Jupyter, containers --------------------------------------------------
    sftp_server: str = Field(
        "/usr/lib/openssh/sftp-server", pattern=r"^/[A-Za-z0-9_./-]+$",
        description="sftp-server in the images: the only command visa's key may run in the owner's account "
        "(file transfers)",
    )
    timezone: str = "Europe/Paris"
    desktop_display: int = Field(1, ge=1, le=99, description="X display of the desktop (:1 -> VNC 5901)")
    jupyter_command: str = Field(
        "/opt/visa/jupyterlab/bin/jupyter-lab", description="JupyterLab executable the image recipes install"
    )
    jupyter_cull_idle_seconds: int = Field(
        3 * 3600, ge=0, le=30 * 86400,
        description="JupyterLab shuts down a kernel idle this long, freeing its memory and GPU "
        "(MappingKernelManager.cull_idle_timeout; 0: never). A busy kernel is never culled",
    )
    jupyter_cull_interval_seconds: int = Field(
        300, ge=1, le=86400, description="How often JupyterLab looks for idle kernels (cull_interval)"
    )
    jupyter_cull_connected: bool = Field(
        False, description="Cull idle kernels that a notebook tab still has open too (cull_connected)"
    )
    apptainer_image_dir: str = Field(
        "/cvmfs/software.esrf.fr/containers", description="Container images Apptainer users are pointed to"
    )
    packages: list[str] = Field(default_factory=list, description="Packages installed at boot on every machine")
    boot_timeout_seconds: int = Field(
        1200, ge=60, description="A machine the cloud runs whose desktop has not answered after this long: ERROR"
    )

    @field_validator("mount_type")
    @classmethod
    def _known_mount_type(cls, value: str) -> str:
        if value not in {"nfs", "ceph", "bind"}:
            raise ValueError("mount_type must be nfs, ceph or bind")
        return value


class TransferSettings(BaseModel):
    """Files in and out of instances, over SFTP as the owner's account."""

    max_upload_bytes: int = Field(
        5 * 1024**3, ge=1, description="Largest file an upload may make (offset of a resumed upload included)"
    )
    max_download_bytes: int = Field(20 * 1024**3, ge=1, description="Largest file that may be downloaded")
    max_listing: int = Field(
        2000, ge=10, le=100_000, description="Entries of one directory listed at most (the rest: truncated)"
    )
    chunk_bytes: int = Field(256 * 1024, ge=4096, le=4 * 1024**2, description="Bytes read or written at a time")
    timeout_seconds: float = Field(30, gt=0, description="A machine silent this long fails the transfer")
    workers: int = Field(
        8, ge=1, le=256, description="Threads of `visa run` for transfers, apart from the pages' and the API's"
    )


_URL_HOST = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


class ClipboardSettings(BaseModel):
    """URLs copied in a remote desktop that the page offers to open on the user's machine."""

    url_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts whose https URLs may be opened, e.g. doi.org or *.esrf.fr (any subdomain); "
        "empty: none",
    )
    max_url_chars: int = Field(2048, ge=16, le=65536, description="Longer clipboard text is never a link")

    @field_validator("url_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        out = []
        for host in value:
            clean = host.strip().lower().rstrip(".")
            if not _URL_HOST.fullmatch(clean) or len(clean) > 253:
                raise ValueError(f"{host!r} is not a host name (or *.domain)")
            out.append(clean)
        return out


_COLOUR = re.compile(r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
LOGO_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg", ".webp", ".gif")


class SiteSettings(BaseModel):
    """The facility's face: every page and every email carries its name, logo, colours and contact."""

    name: str = Field("VISA", min_length=1, max_length=60, description="The service's name in pages and emails")
    tagline: str = Field("remote analysis", max_length=80, description="Beside the name in the pages' top bar")
    logo: str | None = Field(
        None,
        description="The facility's logo in the top bar: an image file (absolute path; .png, .svg, .jpg, .jpeg, "
        ".webp or .gif) that visa serves as /site/logo, or an https:// URL (its origin is added to the "
        "pages' img-src)",
    )
    logo_alt: str = Field("", max_length=120, description="The logo's text for screen readers (default: the name)")
    brand_colour: str = Field("#1f4e79", description="The top bar's colour (#rgb or #rrggbb; white text on it)")
    accent_colour: str = Field("#2f6fb0", description="Links and main buttons (#rgb or #rrggbb; white text on it)")
    contact_email: str | None = Field(
        None, max_length=254, pattern=r"^[^@\s<>\"]+@[^@\s<>\"]+$",
        description="Where users ask for help: in every page's footer, the help pages and every email",
    )

    @field_validator("brand_colour", "accent_colour")
    @classmethod
    def _colour(cls, value: str) -> str:
        if not _COLOUR.fullmatch(value):
            raise ValueError(f"{value[:40]!r} is not a colour: #rgb or #rrggbb, e.g. #1f4e79")
        return value.lower()

    @field_validator("logo")
    @classmethod
    def _logo(cls, value: str | None) -> str | None:
        if not value:
            return None
        if "://" in value:
            parts = urlsplit(value)
            if parts.scheme != "https" or not parts.hostname or parts.username or any(c.isspace() for c in value):
                raise ValueError("a logo URL must be an https:// URL with a host")
            return value
        if not value.startswith("/"):
            raise ValueError("a logo file must be an absolute path (or give an https:// URL)")
        if not value.lower().endswith(LOGO_SUFFIXES):
            raise ValueError(f"a logo file must end in one of {', '.join(LOGO_SUFFIXES)}")
        return value

    @property
    def logo_url(self) -> str | None:
        """Where pages find the logo: visa's own /site/logo for a file, else the URL."""
        if self.logo is None:
            return None
        return self.logo if "://" in self.logo else "/site/logo"

    @property
    def logo_origin(self) -> str | None:
        """The origin a logo URL's image comes from (for the pages' Content-Security-Policy)."""
        if self.logo is None or "://" not in self.logo:
            return None
        parts = urlsplit(self.logo)
        return f"https://{parts.netloc}"


class HelpSettings(BaseModel):
    """The help pages, /help: Markdown files the facility writes."""

    dir: Path | None = Field(
        None,
        description="A directory of Markdown files (index.md first; one page per *.md, its name the file's); "
        "unset: visa's own user guide",
    )


class MailSettings(BaseModel):
    """The emails' templates."""

    templates_dir: Path | None = Field(
        None,
        description="A directory of email templates that replace visa's own file by file (same names: "
        "<kind>.txt, <kind>.html, _base.html); `visa check-config` renders each with the variables "
        "visa gives it",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VISA_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Field(Path("var"), description="Where the embedded setup keeps its state")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in data_dir")
    secret_key: str | None = Field(None, description="Signs sessions; default generated in data_dir")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    base_url: str = Field("http://127.0.0.1:8080", description="Public URL, for emails and redirects")
    instance_name_prefix: str = Field("visa", description="Cloud server names are {prefix}-{id}")
    default_quota: int = Field(2, ge=-1, description="Instances per user; -1 = unlimited")
    default_cloud: str = Field("local", description="Name of the cloud new instances go to")
    connect_token_seconds: int = Field(30, ge=1)
    user_content_domain: str | None = Field(
        None,
        description="Domain that serves instances' web content (JupyterLab), one host per instance: "
        "<uid>.<domain>[:port]. Never visa's host nor a parent of it; best a registrable domain of its "
        "own. Default: instances.localhost with base_url's port (browsers resolve it to loopback)",
    )
    max_request_bytes: int = Field(1_000_000, ge=1024, description="Largest request body but a file upload's")
    request_body_seconds: float = Field(
        30, gt=0, description="A request body (but a file upload's) not received this long after its headers: 408"
    )
    session_cookie_secure: bool = False
    local_accounts: bool | None = Field(None, description="Default: on unless OIDC is configured")
    log_json: bool = False
    database_notify: bool = Field(
        True,
        description="On PostgreSQL, wake event streams and command workers with LISTEN/NOTIFY (one "
        "connection per process); false: they poll (e.g. behind a pooler in transaction mode, which cannot LISTEN)",
    )
    lifetimes: LifetimeSettings = Field(default_factory=LifetimeSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    oidc: OidcSettings = Field(default_factory=OidcSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    database_pool: DatabasePoolSettings = Field(default_factory=DatabasePoolSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    posix: PosixSettings = Field(default_factory=PosixSettings)
    sharing: SharingSettings = Field(default_factory=SharingSettings)
    provisioning: ProvisioningSettings = Field(default_factory=ProvisioningSettings)
    transfers: TransferSettings = Field(default_factory=TransferSettings)
    clipboard: ClipboardSettings = Field(default_factory=ClipboardSettings)
    experiments: ExperimentsSettings = Field(default_factory=ExperimentsSettings)
    network: NetworkSettings = Field(default_factory=NetworkSettings)
    bookings: BookingSettings = Field(default_factory=BookingSettings)
    site: SiteSettings = Field(default_factory=SiteSettings)
    help: HelpSettings = Field(default_factory=HelpSettings)
    mail: MailSettings = Field(default_factory=MailSettings)

    @field_validator("database_url")
    @classmethod
    def _known_dialect(cls, value: str | None) -> str | None:
        if value and value.split(":", 1)[0].split("+", 1)[0] not in {"sqlite", "postgresql"}:
            raise ValueError("database_url must be a sqlite:// or postgresql:// URL")
        return value

    @field_validator("user_content_domain")
    @classmethod
    def _plain_domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower().rstrip(".")
        host, _, port = value.partition(":")
        labels = host.split(".")
        if (
            len(labels) < 2
            or not all(re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", label) for label in labels)
            or (port and not (port.isdigit() and 0 < int(port) < 65536))
        ):
            raise ValueError("must be a domain name with an optional port, like visa-content.example.org")
        return value

    @model_validator(mode="after")
    def _content_apart_from_visa(self) -> Settings:
        visa_host = (urlsplit(self.base_url).hostname or "").lower()
        content = self.content_domain.split(":", 1)[0]
        if visa_host == content or visa_host.endswith("." + content):
            raise ValueError("user_content_domain must not be visa's host nor a parent domain of it")
        return self

    @property
    def content_domain(self) -> str:
        """The user-content domain, with a port when browsers need one."""
        if self.user_content_domain:
            return self.user_content_domain
        port = urlsplit(self.base_url).port
        return "instances.localhost" + (f":{port}" if port else "")

    def user_content_origin(self, uid: str) -> str:
        """Where the web content of instance ``uid`` is served: an origin that is not visa's."""
        return f"{urlsplit(self.base_url).scheme}://{uid}.{self.content_domain}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _TomlSource(settings_cls)

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'visa.db').resolve()}"

    def engine_options(self) -> dict[str, Any]:
        """Pool options for ``Database`` (ignored for SQLite, whose connections are files)."""
        pool = self.database_pool
        return {"pool_size": pool.size, "max_overflow": pool.max_overflow,
                "pool_timeout": pool.timeout_seconds, "pool_recycle": pool.recycle_seconds}

    @property
    def uses_local_accounts(self) -> bool:
        if self.local_accounts is not None:
            return self.local_accounts
        return not self.oidc.enabled

    def private_data_dir(self) -> Path:
        """The data directory, made if need be, readable by visa's own account only (0700)."""
        return private_dir(self.data_dir)

    def resolved_secret_key(self) -> str:
        """The configured key, or one generated once and kept in the data directory (0600 from
        its creation: never readable by others, not even for an instant)."""
        if self.secret_key:
            return self.secret_key
        path = self.private_data_dir() / "secret_key"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            _tighten(path, 0o600)
            return path.read_text().strip()
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
        return path.read_text().strip()


def _tighten(path: Path, mode: int) -> None:
    # Made by an older version or by hand: take away what others could read, if it is ours.
    st = path.lstat()
    if st.st_uid == os.geteuid() and st.st_mode & 0o777 & ~mode:
        path.chmod(st.st_mode & mode)


def private_dir(path: Path) -> Path:
    """``path`` as a directory only visa's account can enter: created 0700 (parents as usual),
    an existing one of ours tightened."""
    if path.is_dir():
        _tighten(path, 0o700)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        _tighten(path, 0o700)
    return path


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the TOML file named by VISA_CONFIG, if any."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("VISA_CONFIG")
        if not path:
            return {}
        try:
            with open(path, "rb") as fh:
                return tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ValueError(f"VISA_CONFIG={path}: file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"VISA_CONFIG={path}: {exc}") from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
