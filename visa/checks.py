"""Configuration checks run by ``visa check-config`` and before ``visa run`` starts serving.

Each check says what is wrong and what to do about it. Errors stop ``visa run``; warnings
are printed and the service starts.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from sqlalchemy import select

from visa.settings import Settings


@dataclass(frozen=True)
class Finding:
    level: Literal["ok", "warning", "error"]
    subject: str
    message: str

    def __str__(self) -> str:
        return f"{self.level:7} {self.subject}: {self.message}"


def _url(value: str, subject: str, schemes: tuple[str, ...] = ("http", "https")) -> Finding | None:
    parsed = urlparse(value)
    if parsed.scheme not in schemes or not parsed.netloc:
        return Finding("error", subject, f"{value[:100]!r} is not an {'/'.join(schemes)} URL")
    return None


def _env_secrets(config: dict[str, Any], path: str = "") -> list[str]:
    missing = []
    for key, value in config.items():
        if isinstance(value, dict) and set(value) == {"env"}:
            if not os.environ.get(str(value["env"])):
                missing.append(f"{path}{key} (from ${value['env']})")
        elif isinstance(value, dict):
            missing += _env_secrets(value, f"{path}{key}.")
    return missing


LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})

# Public suffixes of more than one label where research facilities have their sites (from the
# Public Suffix List); any other suffix is taken to be the last label. Offline, and short on
# purpose: a site under an unlisted suffix is warned about wrongly at worst, never missed
# (the guess then groups more hosts into one site, not fewer).
MULTI_LABEL_SUFFIXES = frozenset({
    "ac.uk", "co.uk", "gov.uk", "org.uk", "ltd.uk", "plc.uk", "nhs.uk", "sch.uk",
    "ac.jp", "co.jp", "go.jp", "or.jp", "ne.jp", "ac.kr", "co.kr", "re.kr", "or.kr", "go.kr",
    "edu.au", "gov.au", "com.au", "org.au", "net.au", "csiro.au", "ac.nz", "co.nz", "govt.nz", "org.nz",
    "edu.cn", "ac.cn", "com.cn", "gov.cn", "org.cn", "net.cn", "edu.tw", "com.tw", "gov.tw",
    "ac.in", "co.in", "res.in", "gov.in", "edu.sg", "com.sg", "gov.sg", "ac.il", "co.il", "gov.il",
    "ac.za", "co.za", "gov.za", "com.br", "gov.br", "edu.br", "org.br", "gob.es", "edu.es", "org.es",
    "ac.at", "co.at", "gv.at", "or.at", "com.pl", "edu.pl", "gov.pl", "asso.fr", "gouv.fr",
    "ac.be", "ac.th", "ac.id", "edu.mx", "gob.mx", "com.mx", "ac.ir", "ac.ru", "edu.ru",
})  # fmt: skip


def registrable_domain(host: str) -> str | None:
    """The site a host belongs to for cookies (its public suffix and one label more); an IP
    address is its own; None for a public suffix itself (``localhost``, ``ac.uk``)."""
    host = host.strip().lower()
    if host.count(":") == 1:  # a name with its port (an IPv6 address has more colons)
        host = host.split(":", 1)[0]
    host = host.rstrip(".")
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    labels = host.split(".")
    suffix = 2 if len(labels) >= 2 and ".".join(labels[-2:]) in MULTI_LABEL_SUFFIXES else 1
    if len(labels) <= suffix:
        return None
    return ".".join(labels[-suffix - 1:])


def _content_domain(settings: Settings) -> Finding:
    """Instances' web content on visa's own site could toss cookies at visa's host."""
    content = settings.content_domain
    site = registrable_domain(content)
    if site is not None and site == registrable_domain(urlparse(settings.base_url).hostname or ""):
        return Finding("warning", "user_content_domain",
                       f"<uid>.{content} shares visa's site {site}: a page an instance serves can set cookies "
                       "for all of it, visa's host included (cookie tossing); serve the content from a "
                       "registrable domain of its own")
    return Finding("ok", "user_content_domain", f"<uid>.{content}")


def check_settings(settings: Settings) -> list[Finding]:
    """Checks that need nothing but the settings."""
    out: list[Finding] = []
    data = settings.data_dir
    try:
        settings.private_data_dir()
        with tempfile.NamedTemporaryFile(dir=data):
            pass
        out.append(Finding("ok", "data_dir", str(data.resolve())))
    except OSError as exc:
        out.append(Finding("error", "data_dir", f"{data} is not writable: {exc.strerror or exc}"))
    out.append(_url(settings.base_url, "base_url") or Finding("ok", "base_url", settings.base_url))
    production = not settings.sqlalchemy_url.startswith("sqlite")
    if urlparse(settings.base_url).scheme == "https" and not settings.session_cookie_secure:
        out.append(Finding("warning", "session_cookie_secure",
                           "base_url is https: set session_cookie_secure = true so cookies never travel in clear"))
    if settings.user_content_domain is None and urlparse(settings.base_url).hostname not in LOOPBACK_NAMES:
        out.append(Finding("warning", "user_content_domain",
                           f"unset: JupyterLab is sent to <uid>.{settings.content_domain}, which only browsers "
                           "on this machine reach; set a domain of its own with a wildcard DNS record"))
    else:
        out.append(_content_domain(settings))
    if production and not settings.secret_key:
        out.append(Finding("warning", "secret_key", "unset with PostgreSQL: every process must sign sessions "
                           "with the same key; set VISA_SECRET_KEY (or secret_key in the TOML file)"))
    elif settings.secret_key and len(settings.secret_key) < 32:
        out.append(Finding("warning", "secret_key", "shorter than 32 characters"))
    if settings.oidc.enabled:
        if settings.oidc.issuer:
            out.append(Finding("ok", "oidc", f"issuer {settings.oidc.issuer}"))
        else:
            out.append(Finding("ok", "oidc", f"Keycloak {settings.oidc.server_url} realm {settings.oidc.realm} "
                               f"(issuer {settings.oidc.issuer_url})"))
        if settings.oidc.browser_url:
            out.append(Finding("ok", "oidc.browser_url", f"browsers log in at {settings.oidc.browser_url}"))
        if not settings.oidc.client_secret:
            out.append(Finding("warning", "oidc.client_secret", "unset: only a public client can log users in"))
        claims = [c for c in ("uid_claim", "gid_claim", "groups_claim", "home_claim") if getattr(settings.oidc, c)]
        if claims and "oidc" not in settings.posix.sources:
            out.append(Finding("warning", "posix.sources", f"oidc.{', oidc.'.join(claims)} set but oidc is not a "
                               "trusted source: the provider's unix identities are not taken"))
    elif production and settings.uses_local_accounts:
        out.append(Finding("warning", "oidc", "no identity provider: users log in with local accounts"))
    if settings.smtp.enabled:
        if settings.smtp.ssl and settings.smtp.starttls:
            out.append(Finding("error", "smtp", "choose ssl or starttls, not both"))
        else:
            out.append(Finding("ok", "smtp", f"{settings.smtp.host}:{settings.smtp.port}"))
    else:
        out.append(Finding("warning", "smtp", "disabled: users are not warned by email before deletions"))
    if settings.scheduler.lease_seconds <= settings.scheduler.unstable_sync_seconds:
        out.append(Finding("warning", "scheduler.lease_seconds",
                           "not longer than a sync period: leadership may flap between processes"))
    return out


def _contrast_with_white(colour: str) -> float:
    """WCAG's contrast ratio of white on ``colour`` (#rgb or #rrggbb)."""
    digits = colour[1:]
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    channels = [int(digits[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 1.05 / (0.2126 * r + 0.7152 * g + 0.0722 * b + 0.05)


def check_face(settings: Settings) -> list[Finding]:
    """The facility's face: its logo file, help pages and email templates, as they will be served."""
    import visa.bookings.emails
    import visa.instances.emails  # noqa: F401  (the email kinds, with their variables)
    from visa.help.content import HelpError, load_pages
    from visa.mail.outbox import SAMPLES
    from visa.mail.render import check_templates, common_context

    out: list[Finding] = []
    for name in ("brand_colour", "accent_colour"):
        ratio = _contrast_with_white(getattr(settings.site, name))
        if ratio < 4.5:  # WCAG 2.1 AA for normal text: the top bar's and buttons' white text on it
            out.append(Finding("warning", f"site.{name}", f"white text on it has a contrast of {ratio:.1f}:1, "
                               "below WCAG AA's 4.5:1: choose a darker colour"))
    logo = settings.site.logo
    if logo and "://" not in logo:
        if not os.access(logo, os.R_OK) or not Path(logo).is_file():
            out.append(Finding("error", "site.logo", f"{logo}: no such readable file"))
        else:
            out.append(Finding("ok", "site.logo", logo))
    if settings.help.dir is not None:
        try:
            pages = load_pages(settings.help.dir)
            out.append(Finding("ok", "help.dir", f"{settings.help.dir}: {len(pages)} pages"))
        except HelpError as exc:
            out.append(Finding("error", "help.dir", str(exc)))
    if settings.mail.templates_dir is not None:
        problems = check_templates(settings.mail.templates_dir, SAMPLES, common_context(settings))
        out.extend(Finding("error", "mail.templates_dir", p) for p in problems)
        if not problems:
            out.append(Finding("ok", "mail.templates_dir", f"{settings.mail.templates_dir}: every template renders"))
    return out


def check_database(settings: Settings, *, probe_clouds: bool = False) -> list[Finding]:
    """Checks that read the database: schema revision, configured clouds (and, if asked, ask them)."""
    import visa.models  # noqa: F401  (every mapped class known before the first query)
    from visa.clouds.models import Cloud
    from visa.clouds.registry import provider_class
    from visa.db import Database
    from visa.migrate import SchemaOutOfDate, require_head

    out: list[Finding] = []
    kwargs: dict[str, Any] = {}
    if not settings.sqlalchemy_url.startswith("sqlite"):
        kwargs["connect_args"] = {"connect_timeout": 5}
    database = Database(settings.sqlalchemy_url, **kwargs)
    try:
        try:
            require_head(database.engine)
        except SchemaOutOfDate as exc:
            return [Finding("error", "database", str(exc))]
        except Exception as exc:
            return [Finding("error", "database", f"cannot connect: {str(exc).splitlines()[0][:200]}")]
        out.append(Finding("ok", "database", f"{database.engine.url.render_as_string(hide_password=True)} at head"))
        with database.sessionmaker() as s:
            clouds = list(s.scalars(select(Cloud).order_by(Cloud.name)))
        names = {c.name for c in clouds}
        if settings.default_cloud not in names:
            out.append(Finding("warning", "default_cloud", f"{settings.default_cloud!r} is not registered "
                               "(`visa init` registers the local cloud; `visa clouds add` others)"))
        for cloud in clouds:
            try:
                provider_class(cloud.kind)
            except Exception as exc:
                out.append(Finding("error", f"cloud {cloud.name}", f"kind {cloud.kind!r}: {exc}"))
                continue
            missing = _env_secrets(cloud.config or {})
            if missing and cloud.enabled:
                out.append(Finding("error", f"cloud {cloud.name}", "secrets not in the environment: " + ", ".join(missing)))
            else:
                out.append(Finding("ok", f"cloud {cloud.name}", f"{cloud.kind}{'' if cloud.enabled else ' (disabled)'}"))
            if cloud.kind == "local" and cloud.enabled:  # other kinds are asked with --probe-clouds only
                out.append(_local_isolation(settings, cloud.name, cloud.config or {}))
                with database.sessionmaker() as s:
                    out.extend(_uids_in_range(s, cloud.name, cloud.config or {}))
                out += _local_homes(settings, cloud.name, cloud.config or {})
        if any(cloud.kind == "local" and cloud.enabled for cloud in clouds):
            out += [f for f in [metadata_service("metadata service")] if f is not None]
        if probe_clouds:
            from visa.clouds.service import cloud_statuses
            from visa.services import Services

            services = Services(settings=settings, database=database)
            for status in cloud_statuses(services, timeout=10, max_age=0):
                if status.status == "unavailable":
                    out.append(Finding("error", f"cloud {status.name}", f"does not work: {status.message}"))
                elif status.status == "ok":
                    out.append(Finding("ok", f"cloud {status.name}", "answers"))
    finally:
        database.dispose()
    return out


def _local_isolation(settings: Settings, name: str, config: dict[str, Any]) -> Finding:
    """What the local cloud can enforce on this machine: sandbox, own accounts, cgroups."""
    from visa.clouds.local import LocalProvider
    from visa.errors import InvalidInput

    try:
        isolated, how = LocalProvider.configured(name, config, settings).isolation()
    except InvalidInput as exc:
        return Finding("error", f"cloud {name}", exc.message)
    return Finding("ok" if isolated else "warning", f"cloud {name} isolation", how)


METADATA_ADDRESS = "169.254.169.254"


def metadata_service(subject: str, timeout: float = 0.5) -> Finding | None:
    """A warning when this host answers at the cloud metadata address: its credentials and
    user data are one connection away from anything on the host that is not a session."""
    import socket

    for port in (80, 443):
        try:
            with socket.create_connection((METADATA_ADDRESS, port), timeout):
                pass
        except OSError:
            continue
        return Finding("warning", subject, f"this host answers on {METADATA_ADDRESS}:{port} (a cloud metadata "
                       "service): local sessions never reach it, but every other program of the host does")  # fmt: skip
    return None


def _uids_in_range(session: Any, name: str, config: dict[str, Any]) -> list[Finding]:
    """Users whose facility uid lies inside the local cloud's ``uid_range``: visa gives uids of that
    range to the accounts it makes, so such a user's uid may be an account made for someone else."""
    from visa.clouds.local import LocalConfig
    from visa.users.models import User

    low, high = LocalConfig.model_fields["uid_range"].default
    raw = config.get("uid_range")
    if isinstance(raw, list | tuple) and len(raw) == 2 and all(isinstance(n, int) for n in raw):
        low, high = raw
    inside = list(session.scalars(
        select(User.username).where(User.uid_number.between(low, high)).order_by(User.username).limit(6)
    ))
    if not inside:
        return []
    shown = ", ".join(inside[:5]) + (", ..." if len(inside) > 5 else "")
    return [Finding("warning", f"cloud {name} uid_range",
                    f"uid_number of {shown} inside {low}-{high}, the range visa gives its own accounts uids from: "
                    "move the range (the cloud's uid_range) outside the facility's uids")]
def _device(path: Path) -> int | None:
    """The file system of ``path``, or of its nearest existing parent (not made yet)."""
    for candidate in (path, *path.parents):
        try:
            return candidate.stat().st_dev
        except OSError:
            continue
    return None


def _local_homes(settings: Settings, name: str, config: dict[str, Any]) -> list[Finding]:
    """Sessions write their homes without bound: on the database's file system, a full home
    is a full database (and a stopped visa)."""
    from visa.provisioning.site import site_for_cloud

    url = settings.sqlalchemy_url
    database = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else settings.data_dir
    root = Path(config.get("root_dir") or settings.data_dir / "local-instances").resolve()
    homes = [root / ".homes"]
    site = site_for_cloud(config, settings.provisioning)
    if site.home_mount_template and site.home_mount_root and site.mount_type == "bind":
        homes.append(Path(site.home_mount_root))
    out = []
    for home in homes:
        if _device(home) is not None and _device(home) == _device(database):
            out.append(Finding("warning", f"cloud {name} homes",
                               f"{home} is on the same file system as {database}: a session that fills its home "
                               "fills the database's disk; give homes a file system of their own, or quotas"))
    return out


def check_identity_provider(settings: Settings, *, level: Literal["warning", "error"] = "error",
                            timeout: float = 5.0) -> list[Finding]:
    """The provider's discovery document and keys, read as the service reads them (nothing when
    users log in with local accounts)."""
    if not settings.oidc.enabled:
        return []
    from visa.auth.oidc import DiscoveryError, OidcClient

    client = OidcClient(settings.oidc, timeout=timeout)
    try:
        doc = client.discovery()
        keys = client.fetch_keys()
    except DiscoveryError as exc:
        return [Finding(level, "oidc discovery", str(exc))]
    missing = [name for name in ("end_session_endpoint",) if not doc.get(name)]
    message = f"{settings.oidc.discovery_url}: issuer {doc['issuer']}, {len(list(keys))} signing key(s)"
    out = [Finding("ok", "oidc discovery", message)]
    if missing:
        out.append(Finding("warning", "oidc discovery", "no end_session_endpoint: logging out of visa leaves the "
                           "provider's own session open in the browser"))
    return out


def check_all(settings: Settings, *, probe_clouds: bool = False,
              provider_level: Literal["warning", "error"] = "error") -> list[Finding]:
    """Every check. An unreachable identity provider is an error for ``visa check-config``; ``visa run``
    asks for a warning (the provider may come back after visa has started)."""
    return (check_settings(settings) + check_face(settings) + check_identity_provider(settings, level=provider_level)
            + check_database(settings, probe_clouds=probe_clouds))
