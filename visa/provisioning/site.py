"""The site configuration (``settings.provisioning``) and the per-image options it meets.

Image options live in the catalogue (``images/*.yaml`` -> ``Image.options``)::

    options:
      desktop_session: xfce          # xfce, mate, openbox or lxqt
      apptainer: true                # configure Apptainer with images from CVMFS
      cvmfs: true                    # false: no CVMFS client at all
      cvmfs_repositories: [software-staging.esrf.fr]   # added to the site's list
      packages: [bliss]              # installed at first boot
      boot_script: |                 # optional; makes the user-data multipart
        #!/bin/sh
        ...
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from visa.errors import InvalidInput
from visa.provisioning import names
from visa.provisioning.sources import check_sources
from visa.settings import ProvisioningSettings

log = logging.getLogger(__name__)

# The command each supported session starts on the desktop's display.
DESKTOP_SESSIONS: dict[str, str] = {
    "xfce": "startxfce4",
    "mate": "mate-session",
    "openbox": "openbox-session",
    "lxqt": "startlxqt",
}


class ImageOptions(BaseModel):
    """What an image may change in what it receives at boot."""

    # Unknown keys are ignored (other parts of visa may keep their own options here).
    model_config = ConfigDict(extra="ignore", frozen=True)

    desktop_session: str = "xfce"
    apptainer: bool = False
    cvmfs: bool = True
    cvmfs_repositories: list[str] = Field(default_factory=list)
    packages: list[str] = Field(default_factory=list)
    boot_script: str | None = Field(None, max_length=65536)


def image_options(raw: dict[str, Any] | None) -> ImageOptions:
    """Parse and check ``Image.options``; errors name the option (``options.<key>``)."""
    try:
        options = ImageOptions.model_validate(raw or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"image option {key}: {first['msg']}", field=f"options.{key}") from exc
    if options.desktop_session not in DESKTOP_SESSIONS:
        raise InvalidInput(
            f"image option desktop_session must be one of {', '.join(DESKTOP_SESSIONS)}",
            field="options.desktop_session",
        )
    for repo in options.cvmfs_repositories:
        names.cvmfs_repository(repo, "options.cvmfs_repositories")
    for package in options.packages:
        names.package_name(package, "options.packages")
    if options.boot_script is not None and not options.boot_script.startswith("#!"):
        raise InvalidInput("image option boot_script must start with #!", field="options.boot_script")
    unknown = set(raw or {}) - set(ImageOptions.model_fields)
    if unknown:
        log.debug("image options not used by provisioning: %s", sorted(unknown))
    return options


def site_for_cloud(cloud_config: dict[str, Any] | None, base: ProvisioningSettings) -> ProvisioningSettings:
    """The site settings with a cloud's own overrides (its ``config["provisioning"]``):
    the local cloud binds host directories where a VM mounts NFS."""
    overrides = (cloud_config or {}).get("provisioning") or {}
    if not overrides:
        return base
    # Checked again, not merged as given: a row stored before its checks, or edited in the
    # database, renders nothing the checks at registration would have refused.
    if not isinstance(overrides, dict):
        raise InvalidInput("config.provisioning must be an object", field="config.provisioning")
    try:
        site = ProvisioningSettings.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(["config", "provisioning", *(str(p) for p in first["loc"])])
        raise InvalidInput(f"{where}: {first['msg']}", field=where) from None
    check_sources(site, "config.provisioning")
    return site


def cloud_check(base: ProvisioningSettings) -> Callable[[dict[str, Any]], ProvisioningSettings]:
    """What a cloud's registration checks its ``provisioning`` settings with: the rules, over the site's
    (visa.clouds.service.register_cloud is given it: provisioning sits above the clouds)."""
    return lambda cloud_config: site_for_cloud(cloud_config, base)


def check_site(site: ProvisioningSettings) -> None:
    """Refuse a site configuration that would render unsafe paths (raised at render time)."""
    names.absolute_path(site.data_root, "provisioning.data_root")
    names.absolute_path(site.processed_root, "provisioning.processed_root")
    names.absolute_path(site.home_root, "provisioning.home_root")
    names.username(site.probe_username, "provisioning.probe_username")
    for repo in site.cvmfs_repositories:
        names.cvmfs_repository(repo, "provisioning.cvmfs_repositories")
    for package in site.packages:
        names.package_name(package, "provisioning.packages")
