"""Cloud-init user-data and metadata of an instance.

The cloud-config is built as a Python dict and written with ``yaml.safe_dump``: no value
can inject YAML. Values that reach paths, fstab lines or shell commands are checked by
:mod:`visa.provisioning.names` first. Boot scripts are static files shipped beside this
module (``files/``); they read the instance's values from ``/etc/visa/instance.env``.

What the machine gets:

* the owner's account (uid/gid from the account source, home directory), no password
  login; a ``visa`` probe account whose key may only run the activity probe;
* CVMFS client configuration and its autofs map; Apptainer pointed at CVMFS images;
* experiment data (:mod:`visa.provisioning.mounts`) in ``/etc/fstab``;
* the desktop (TigerVNC with the instance secret, screen size, keyboard layout) and
  JupyterLab under ``/jupyter/<uid>/``, started last: their ports answering is the
  readiness signal (:func:`readiness_ports`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shlex
from collections.abc import Sequence
from datetime import datetime
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from importlib import resources
from typing import Any

import yaml

from visa.catalogue.models import Protocol
from visa.clouds.base import VISA_TAG
from visa.errors import InvalidInput
from visa.experiments.models import Experiment, Proposal
from visa.instances.models import Instance
from visa.provisioning import names
from visa.provisioning.mounts import data_mounts, fstab_entry
from visa.provisioning.site import DESKTOP_SESSIONS, check_site, current_site, image_options
from visa.settings import ProvisioningSettings

log = logging.getLogger(__name__)

MASK = "********"
LIBEXEC = "/usr/local/libexec/visa"
ENV_FILE = "/etc/visa/instance.env"
SECRET_FILE = "/etc/visa/desktop.secret"
JUPYTER_CONFIG = "/etc/visa/jupyter_server_config.json"
_TIMEZONE = re.compile(r"[A-Za-z_+-]+(/[A-Za-z0-9_+-]+){0,2}")
# Values of instance.env are read by sh and by systemd alike: keep them unquoted-safe.
_ENV_VALUE = re.compile(r"[A-Za-z0-9_./:,@+-]*")
# Nova limits a metadata value to 255 characters, and user-data to 64 KiB once base64-encoded.
USER_DATA_MAX_BYTES = 65535 // 4 * 3
_METADATA_MAX = 255


def jupyter_base_url(instance_uid: str) -> str:
    """Where the gateway proxies JupyterLab; the server must be told the same prefix."""
    return f"/jupyter/{instance_uid}/"


def readiness_ports(instance: Instance) -> dict[str, int]:
    """Ports that answer once the machine is ready (required protocols of the image)."""
    return {str(p.protocol): p.port for p in instance.plan.image.protocols if not p.optional}


def _file(name: str) -> str:
    return resources.files("visa.provisioning").joinpath("files", name).read_text()


def _unit(description: str, user: str, exec_start: str) -> str:
    return (
        "[Unit]\n"
        f"Description={description}\n"
        "After=network-online.target remote-fs.target autofs.service\n"
        "Wants=network-online.target\n\n"
        "[Service]\n"
        f"User={user}\n"
        "PAMName=login\n"
        f"ExecStart={exec_start}\n"
        "Restart=always\n"
        "RestartSec=2\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def _env_file(values: dict[str, str | int]) -> str:
    lines = ["# Written by visa at first boot; read by the boot scripts and services."]
    for key, value in values.items():
        text = str(value)
        if not _ENV_VALUE.fullmatch(text):  # every value was validated; this is the last guard
            raise InvalidInput(f"{key} holds characters not allowed at boot", field=key)
        lines.append(f"{key}={text}")
    return "\n".join(lines) + "\n"


def _cvmfs(repositories: list[str], site: ProvisioningSettings) -> tuple[list[dict[str, Any]], list[Any]]:
    files: list[dict[str, Any]] = [
        {
            "path": "/etc/cvmfs/default.local",
            "permissions": "0644",
            "content": (
                f"CVMFS_REPOSITORIES={','.join(repositories)}\n"
                f"CVMFS_HTTP_PROXY={shlex.quote(site.cvmfs_http_proxy)}\n"
                f"CVMFS_QUOTA_LIMIT={site.cvmfs_quota_mb}\n"
                "CVMFS_CLIENT_PROFILE=single\n"
            ),
        },
        # autofs mounts each repository under /cvmfs on first access.
        {
            "path": "/etc/auto.master.d/cvmfs.autofs",
            "permissions": "0644",
            "content": "/cvmfs program:/etc/auto.cvmfs\n",
        },
    ]
    used_domains = {
        domain for domain in site.cvmfs_domains if any(r.endswith("." + domain) for r in repositories)
    }
    for domain in sorted(used_domains):
        conf = site.cvmfs_domains[domain]
        keys_dir = names.absolute_path(conf.keys_dir, f"provisioning.cvmfs_domains.{domain}.keys_dir")
        files.append(
            {
                "path": f"/etc/cvmfs/domain.d/{domain}.local",
                "permissions": "0644",
                "content": (
                    f"CVMFS_SERVER_URL={shlex.quote(';'.join(conf.server_urls))}\nCVMFS_KEYS_DIR={keys_dir}\n"
                ),
            }
        )
        if conf.public_key:
            files.append(
                {"path": f"{keys_dir}/{domain}.pub", "permissions": "0644", "content": conf.public_key}
            )
    files.append({"path": f"{LIBEXEC}/cvmfs-setup", "permissions": "0755", "content": _file("cvmfs-setup.sh")})
    # Reported and skipped when the image has no client: the boot carries on.
    commands = [[f"{LIBEXEC}/cvmfs-setup"]]
    return files, commands


def _build(
    instance: Instance,
    *,
    site: ProvisioningSettings,
    now: datetime,
    probe_public_key: str | None,
    host_key: tuple[str, str] | None,
    open_data: Sequence[Experiment | Proposal],
    mask_secrets: bool,
) -> tuple[dict[str, Any], str | None, int]:
    check_site(site)
    image = instance.plan.image
    options = image_options(image.options)
    owner = instance.owner
    uid = names.path_component(instance.uid, "uid")
    username = names.username(owner.username, "username")
    if username == site.probe_username:
        raise InvalidInput(f"the owner may not be named {site.probe_username!r}", field="username")
    home = names.absolute_path(owner.home_path or f"{site.home_root}/{username}", "home_path")
    width, height = names.screen(instance.screen_width, instance.screen_height)
    xkb_layout, xkb_variant = names.keyboard(instance.keyboard_layout)
    secret = MASK if mask_secrets else names.secret(instance.secret, "secret")
    if not _TIMEZONE.fullmatch(site.timezone):
        raise InvalidInput("provisioning.timezone is not a time zone name", field="provisioning.timezone")
    key = probe_public_key if probe_public_key is not None else site.probe_public_key
    key = names.ssh_public_key(key) if key else None

    vnc_port = image.port_of(Protocol.VNC)
    jupyter_port = image.port_of(Protocol.JUPYTER)
    mounts = data_mounts(instance, site=site, now=now, open_data=open_data)

    bootcmd: list[Any] = []
    owner_account: dict[str, Any] = {
        "name": username,
        "gecos": names.gecos(owner.full_name),
        "homedir": home,
        "shell": site.user_shell,
        "lock_passwd": True,
    }
    if owner.uid_number is not None:
        owner_account["uid"] = int(owner.uid_number)
    if owner.gid_number is not None:
        # The account source's primary group; users-groups cannot set a gid, so create it first.
        gid = int(owner.gid_number)
        bootcmd.append(
            f"getent group {shlex.quote(username)} >/dev/null || groupadd -o -g {gid} {shlex.quote(username)}"
        )
        owner_account["primary_group"] = username
        owner_account["no_user_group"] = True
    users: list[Any] = [owner_account]
    if key:
        users.append(
            {
                "name": site.probe_username,
                "gecos": "visa activity probe",
                "homedir": f"/var/lib/{site.probe_username}",
                "shell": "/bin/sh",
                "lock_passwd": True,
                # The key can run the probe and nothing else, with no forwarding or terminal.
                "ssh_authorized_keys": [f'restrict,command="{LIBEXEC}/probe" {key}'],
                "sudo": f"ALL=({username}) NOPASSWD: {LIBEXEC}/x-idle",
            }
        )

    env: dict[str, str | int] = {
        "VISA_INSTANCE_UID": uid,
        "VISA_OWNER": username,
        "VISA_HOME": home,
        "VISA_DATA_ROOT": site.data_root,
        "VISA_PROCESSED_ROOT": site.processed_root,
        "VISA_DISPLAY": f":{site.desktop_display}",
        "VISA_VNC_PORT": vnc_port or "",
        "VISA_GEOMETRY": f"{width}x{height}",
        "VISA_XKB_LAYOUT": xkb_layout,
        "VISA_XKB_VARIANT": xkb_variant,
        "VISA_SESSION": DESKTOP_SESSIONS[options.desktop_session],
        "VISA_JUPYTER_PORT": jupyter_port or "",
        "VISA_JUPYTER_BASE_URL": jupyter_base_url(uid),
        "VISA_JUPYTER_COMMAND": names.absolute_path(site.jupyter_command, "provisioning.jupyter_command"),
        "VISA_JUPYTER_CONFIG": JUPYTER_CONFIG,
    }
    write_files: list[dict[str, Any]] = [
        {"path": ENV_FILE, "permissions": "0644", "content": _env_file(env)},
        {"path": f"{LIBEXEC}/x-idle", "permissions": "0755", "content": _file("x-idle.sh")},
        {"path": f"{LIBEXEC}/probe", "permissions": "0755", "content": _file("probe.py")},
    ]
    runcmd: list[Any] = []
    packages = list(dict.fromkeys([*site.packages, *options.packages]))

    if options.cvmfs:
        repositories = list(dict.fromkeys([*site.cvmfs_repositories, *options.cvmfs_repositories]))
        files, commands = _cvmfs(repositories, site)
        write_files += files
        runcmd += commands

    if options.apptainer:
        image_dir = names.absolute_path(site.apptainer_image_dir, "provisioning.apptainer_image_dir")
        write_files.append(
            {
                "path": "/etc/profile.d/visa-apptainer.sh",
                "permissions": "0644",
                "content": (
                    "# Container images come from CVMFS; data and software are visible inside.\n"
                    f"export VISA_CONTAINER_IMAGES={image_dir}\n"
                    f"export APPTAINER_BINDPATH=/cvmfs,{site.data_root},{site.processed_root}\n"
                ),
            }
        )

    services: list[str] = []
    if vnc_port:
        write_files += [
            {"path": SECRET_FILE, "permissions": "0600", "content": secret},
            {"path": f"{LIBEXEC}/setup-desktop", "permissions": "0755", "content": _file("setup-desktop.sh")},
            {"path": f"{LIBEXEC}/desktop", "permissions": "0755", "content": _file("desktop.sh")},
            {
                "path": "/etc/systemd/system/visa-desktop.service",
                "permissions": "0644",
                "content": _unit("visa desktop (VNC)", username, f"{LIBEXEC}/desktop"),
            },
        ]
        runcmd.append([f"{LIBEXEC}/setup-desktop"])
        services.append("visa-desktop.service")
    if jupyter_port:
        jupyter_config = {
            "ServerApp": {"allow_remote_access": True, "trust_xheaders": True},
            "IdentityProvider": {"token": secret},
        }
        write_files += [
            {
                # Deferred: the owner's account exists only after the users module ran.
                "path": JUPYTER_CONFIG,
                "permissions": "0400",
                "owner": f"{username}:{username}",  # primary group is named after the user either way
                "content": json.dumps(jupyter_config, indent=1) + "\n",
                "defer": True,
            },
            {"path": f"{LIBEXEC}/jupyter", "permissions": "0755", "content": _file("jupyter.sh")},
            {
                "path": "/etc/systemd/system/visa-jupyter.service",
                "permissions": "0644",
                "content": _unit("visa JupyterLab", username, f"{LIBEXEC}/jupyter"),
            },
        ]
        services.append("visa-jupyter.service")

    # Data first, services last: a port that answers means everything above is in place.
    # (cloud-init's mounts module made the mount points and wrote fstab; mount again in
    # case the network came late, it is a no-op for what is already mounted.)
    if mounts:
        runcmd.append(["mount", "-a"])
    if services:
        runcmd.append(["systemctl", "daemon-reload"])
        runcmd.append(["systemctl", "enable", "--now", *services])

    config: dict[str, Any] = {"timezone": site.timezone, "ssh_pwauth": False, "disable_root": True}
    if host_key is not None:
        # The host key visa made for this instance, and no other: the probe pins it.
        private, public = host_key
        config["ssh_deletekeys"] = True
        config["ssh_genkeytypes"] = ["ed25519"]  # present already: nothing is generated
        config["ssh_keys"] = {"ed25519_private": MASK if mask_secrets else private, "ed25519_public": public}
    if bootcmd:
        config["bootcmd"] = bootcmd
    config["users"] = users
    if mounts:
        config["mounts"] = [fstab_entry(m.spec, site) for m in mounts]
    if packages:
        config["package_update"] = True
        config["packages"] = packages
    config["write_files"] = write_files
    config["runcmd"] = runcmd
    config["final_message"] = f"visa instance {uid} configured after $UPTIME seconds"
    return config, options.boot_script, len(mounts)


class _Dumper(yaml.SafeDumper):
    """Safe dumper that writes multi-line strings (scripts, units) as readable ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(config: dict[str, Any]) -> str:
    body = yaml.dump(
        config, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000
    )
    return "#cloud-config\n" + body


def _multipart(cloud_config: str, boot_script: str) -> str:
    # A boundary derived from the content: stable output, and it cannot occur in the parts.
    boundary = "visa-" + hashlib.sha256((cloud_config + boot_script).encode()).hexdigest()[:32]
    message = MIMEMultipart(boundary=boundary)
    message.attach(MIMEText(cloud_config, "cloud-config", "utf-8"))
    message.attach(MIMEText(boot_script, "x-shellscript", "utf-8"))
    return message.as_string()


def render_user_data(
    instance: Instance,
    *,
    site: ProvisioningSettings | None = None,
    now: datetime,
    probe_public_key: str | None = None,
    host_key: tuple[str, str] | None = None,
    open_data: Sequence[Experiment | Proposal] = (),
    mask_secrets: bool = False,
) -> str:
    """The instance's user-data: ``#cloud-config``, or MIME multipart when the image has a boot script.

    ``open_data``: experiments or proposals whose open data (embargo over at ``now``) the
    owner asked to see; a proposal still under embargo raises ``Forbidden``.
    ``probe_public_key`` defaults to ``site.probe_public_key``. ``host_key``: the machine's
    SSH host key (private OpenSSH text, public line), from :mod:`visa.provisioning.host_keys`.
    """
    site = site or current_site()
    config, boot_script, mount_count = _build(
        instance,
        site=site,
        now=now,
        probe_public_key=probe_public_key,
        host_key=host_key,
        open_data=open_data,
        mask_secrets=mask_secrets,
    )
    text = _dump(config)
    if boot_script:
        text = _multipart(text, boot_script)
    if len(text.encode()) > USER_DATA_MAX_BYTES:
        raise InvalidInput(
            f"the machine's boot configuration is too large for the cloud ({mount_count} data mounts): "
            "choose fewer experiments",
            field="experiments",
        )
    log.info(
        "rendered user-data for instance %s (image %s, %d data mounts, %d bytes)",
        instance.uid,
        instance.plan.image.name,
        mount_count,
        len(text),
    )
    return text


def render_metadata(instance: Instance) -> dict[str, str]:
    """Server metadata (visible to cloud admins and in the machine): no secrets, 255 chars a value."""
    owner = instance.owner
    experiments = sorted(instance.experiments, key=lambda e: e.id)
    ready = readiness_ports(instance)
    values = {
        VISA_TAG: instance.uid,
        "visa_id": str(instance.id),
        "visa_uid": instance.uid,
        "visa_owner": owner.username,
        "visa_home": owner.home_path or "",
        "visa_uid_number": "" if owner.uid_number is None else str(owner.uid_number),
        "visa_gid_number": "" if owner.gid_number is None else str(owner.gid_number),
        "visa_screen_width": str(instance.screen_width),
        "visa_screen_height": str(instance.screen_height),
        "visa_keyboard_layout": instance.keyboard_layout,
        "visa_instruments": ",".join(sorted({e.instrument.name for e in experiments})),
        "visa_proposals": ",".join(sorted({e.proposal.identifier for e in experiments})),
        "visa_ready_ports": ",".join(f"{k}:{v}" for k, v in sorted(ready.items())),
    }
    return {k: (v if len(v) <= _METADATA_MAX else v[: _METADATA_MAX - 3] + "...") for k, v in values.items()}
