"""One typed settings object for the whole service.

Values come, in order of precedence, from ``VISA_*`` environment variables (nested
fields with ``__``, e.g. ``VISA_SMTP__HOST``), an optional TOML file named by
``VISA_CONFIG``, then the defaults written here. The defaults are the embedded
setup: SQLite in the data directory, the local provider and local accounts.
"""

from __future__ import annotations

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
    """Keycloak (or any OIDC server with Keycloak's URL layout)."""

    server_url: str | None = Field(
        None,
        description="e.g. https://sso.example.org/ (empty: local accounts). The back channel: where visa's "
        "processes fetch tokens, keys and user info",
    )
    browser_url: str | None = Field(
        None,
        description="The front channel: the provider's address as browsers reach it, for the login and "
        "logout redirects and the tokens' issuer (default: server_url). Set it when visa reaches the provider "
        "by another name, e.g. http://keycloak:8080/ inside Compose and http://sso.localhost:8180/ outside",
    )
    realm: str = "visa"
    client_id: str = "visa"
    client_secret: str | None = None
    audience: str | None = Field(None, description="Expected 'aud' of bearer tokens (default: client_id)")
    role_claim: str | None = Field(None, description="Claim holding roles, e.g. realm_access.roles")
    role_mapping: dict[str, str] = Field(default_factory=dict, description="token role -> visa role")
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

    @property
    def frontchannel_base(self) -> str:
        """The provider's base URL as browsers reach it, ending with a slash."""
        return (self.browser_url or self.server_url or "").rstrip("/") + "/"

    @property
    def issuer(self) -> str:
        """The realm as tokens name it: the browser-facing address, as Keycloak names itself when
        its hostname is set (KC_HOSTNAME), whichever address visa fetched the token from."""
        return f"{self.frontchannel_base}realms/{self.realm}"


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
    usage_seconds: int = Field(300, ge=10, description="How often instance counts and resources in use are sampled")
    usage_keep_days: int = Field(35, ge=1, description="How long usage samples are kept (the job prunes older ones)")
    lease_seconds: int = Field(30, ge=5)
    command_concurrency: int = Field(
        4, ge=1, le=64, description="Commands a process runs at once on one cloud (a hung cloud stalls only its own)"
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

    @field_validator("raw_mount_template", "processed_mount_template")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        names = _placeholders(value)
        if not names <= {"proposal", "beamline"}:
            raise ValueError(f"only {{proposal}} and {{beamline}} may be used, not {sorted(names)}")
        return value

    @model_validator(mode="after")
    def _home_inside_root(self) -> ProvisioningSettings:
        check_home_template(self.home_mount_template, self.home_mount_root)
        return self


def _placeholders(template: str) -> set[str]:
    import string

    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"not a template: {exc}") from None


def split_source(source: str) -> tuple[str, str]:
    """(server, path) of a mount source: ``host:/path`` (NFS), ``mon1,mon2:/path`` (CephFS) or
    ``/path`` (bind)."""
    if source.startswith("/"):
        return "", source
    server, sep, path = source.partition(":")
    return (server, path) if sep else ("", source)


def home_source_inside(source: str, root: str) -> bool:
    """Whether a rendered home source is a directory strictly inside ``root`` (same server,
    a normalised path below the root's, no ``..``)."""
    import posixpath

    server, path = split_source(source)
    root_server, root_path = split_source(root)
    if server != root_server or not path.startswith("/") or posixpath.normpath(path) != path:
        return False
    base = posixpath.normpath(root_path)
    return path.startswith(base.rstrip("/") + "/") and path != base


# A sample identity to render a home template with when it is checked: a template that leaves
# its root with these values leaves it for anyone.
_SAMPLE = {"username": "visa-sample", "uid": 123456}


def check_home_template(template: str | None, root: str | None) -> None:
    """Refuse a home template that is not one directory per user inside its root (raises ValueError)."""
    if template is None:
        return
    if not root:
        raise ValueError("home_mount_template needs home_mount_root (the directory every home lies inside)")
    names = _placeholders(template)
    if not names <= {"username", "uid"}:
        raise ValueError(f"home_mount_template: only {{username}} and {{uid}} may be used, not {sorted(names)}")
    if "username" not in names and "uid" not in names:
        raise ValueError("home_mount_template must contain {username} or {uid}: one home per user")
    rendered = template.format(**_SAMPLE)
    if not home_source_inside(rendered, root):
        raise ValueError(f"home_mount_template renders {rendered!r}, outside home_mount_root {root!r}")


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
        return not self.oidc.server_url

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
