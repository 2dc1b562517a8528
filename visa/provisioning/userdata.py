"""Cloud-init user-data and metadata of a machine, rendered from its :class:`~visa.provisioning.spec.BootSpec`.

The cloud-config is built as a Python dict and written with ``yaml.safe_dump``: no value
can inject YAML. Values that reach paths, fstab lines or shell commands are checked by
:mod:`visa.provisioning.names` first. Boot scripts are static files shipped beside this
module (``files/``); they read the instance's values from ``/etc/visa/instance.env``.

What the machine gets, one section function each (``_account``, ``_probe``, ``_environment``,
``_software``, ``_desktop``, ``_jupyter``, data mounts and ``_start``):

* the owner's account (uid/gid and supplementary groups from the account source, home
  directory: their persistent home share when the site has one, given ``/etc/skel`` only when
  empty), no password login, visa's key allowed to run ``sftp-server`` and nothing else (file
  transfers); a ``visa`` probe account whose key may only run the activity probe;
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
from dataclasses import dataclass, field
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from importlib import resources
from typing import Any

import yaml

from visa.catalogue.models import Protocol
from visa.clouds.base import VISA_TAG, MountSpec
from visa.errors import InvalidInput
from visa.provisioning import names
from visa.provisioning.mounts import DataMount, data_mounts, fstab_entry, home_mount, home_path
from visa.provisioning.site import DESKTOP_SESSIONS, ImageOptions, check_site, image_options
from visa.provisioning.spec import BootSpec
from visa.settings import ProvisioningSettings

log = logging.getLogger(__name__)

MASK = "********"
LIBEXEC = "/usr/local/libexec/visa"
ENV_FILE = "/etc/visa/instance.env"
SECRET_FILE = "/etc/visa/desktop.secret"
MOUNTS_FILE = "/etc/visa/mounts"
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


def readiness_ports(machine: BootSpec) -> dict[str, int]:
    """Ports that answer once the machine is ready (required protocols of the image)."""
    return {str(p.protocol): p.port for p in machine.ports if not p.optional}


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


@dataclass(frozen=True)
class _Checked:
    """The machine's values once each has been checked, in the order the checks run."""

    uid: str
    username: str
    home: str
    width: int
    height: int
    xkb_layout: str
    xkb_variant: str
    secret: str
    probe_key: str | None
    options: ImageOptions


def _check(
    machine: BootSpec, site: ProvisioningSettings, probe_public_key: str | None, mask_secrets: bool
) -> _Checked:
    check_site(site)
    options = image_options(machine.image_options)
    owner = machine.owner
    uid = names.path_component(machine.uid, "uid")
    username = names.username(owner.username, "username")
    if username == site.probe_username:
        raise InvalidInput(f"the owner may not be named {site.probe_username!r}", field="username")
    home = home_path(machine, site)
    width, height = names.screen(machine.screen_width, machine.screen_height)
    xkb_layout, xkb_variant = names.keyboard(machine.keyboard_layout)
    secret = MASK if mask_secrets else names.secret(machine.secret, "secret")
    if not _TIMEZONE.fullmatch(site.timezone):
        raise InvalidInput("provisioning.timezone is not a time zone name", field="provisioning.timezone")
    key = probe_public_key if probe_public_key is not None else site.probe_public_key
    key = names.ssh_public_key(key) if key else None
    return _Checked(uid, username, home, width, height, xkb_layout, xkb_variant, secret, key, options)


@dataclass
class _Parts:
    """The cloud-config lists each section adds to, in the order cloud-init meets them."""

    bootcmd: list[Any] = field(default_factory=list)
    users: list[Any] = field(default_factory=list)
    write_files: list[dict[str, Any]] = field(default_factory=list)
    runcmd: list[Any] = field(default_factory=list)
    services: list[str] = field(default_factory=list)


def _account(
    machine: BootSpec, v: _Checked, site: ProvisioningSettings, home: MountSpec | None, parts: _Parts
) -> None:
    """The owner's account: uid/gid and supplementary groups from the account source, no
    password login; with a home share, the home is the share (never made or filled here)."""
    owner = machine.owner
    account: dict[str, Any] = {
        "name": v.username,
        "gecos": names.gecos(owner.full_name),
        "homedir": v.home,
        "shell": site.user_shell,
        "lock_passwd": True,
    }
    if home is not None:
        account["no_create_home"] = True  # the share is the home; home-setup checks it is mounted
    if owner.uid_number is not None:
        account["uid"] = int(owner.uid_number)
    if owner.gid_number is not None:
        # The account source's primary group; users-groups cannot set a gid, so create it first.
        gid = int(owner.gid_number)
        parts.bootcmd.append(
            f"getent group {shlex.quote(v.username)} >/dev/null || groupadd -o -g {gid} {shlex.quote(v.username)}"
        )
        account["primary_group"] = v.username
        account["no_user_group"] = True
    groups = [int(g) for g in owner.extra_gids]
    for gid in groups:
        # The facility's groups, by number: the image may know them (sssd) or not (made here).
        parts.bootcmd.append(f"getent group {gid} >/dev/null || groupadd -g {gid} visa-g{gid}")
    if groups:
        parts.runcmd.append(["usermod", "-a", "-G", ",".join(map(str, groups)), v.username])
    if v.probe_key:
        # visa's key may run sftp-server as the owner (file transfers from the instance page), nothing else.
        account["ssh_authorized_keys"] = [f'restrict,command="{site.sftp_server}" {v.probe_key}']
    parts.users.append(account)


def _home(home: MountSpec | None, parts: _Parts) -> None:
    """The home checked (the share mounted) and given /etc/skel only when empty, before
    anything else writes in it."""
    parts.write_files.append(
        {"path": f"{LIBEXEC}/home-setup", "permissions": "0755", "content": _file("home-setup.sh")}
    )
    parts.runcmd.append([f"{LIBEXEC}/step", "home-setup", f"{LIBEXEC}/home-setup"])


def _probe(v: _Checked, site: ProvisioningSettings, parts: _Parts) -> None:
    """The ``visa`` probe account, whose key may only run the activity probe."""
    if v.probe_key:
        parts.users.append(
            {
                "name": site.probe_username,
                "gecos": "visa activity probe",
                "homedir": f"/var/lib/{site.probe_username}",
                "shell": "/bin/sh",
                "lock_passwd": True,
                # The key can run the probe and nothing else, with no forwarding or terminal.
                "ssh_authorized_keys": [f'restrict,command="{LIBEXEC}/probe" {v.probe_key}'],
                "sudo": f"ALL=({v.username}) NOPASSWD: {LIBEXEC}/x-idle, {LIBEXEC}/jupyter-kernels",
            }
        )


ASSIGNED_MARKER = "/etc/visa/assigned"


def helper_account(site: ProvisioningSettings, key: str) -> dict[str, Any]:
    """The account whose key (visa's) may run the root helper (``files/assign.py``) and nothing else."""
    name = site.assign_username
    return {
        "name": name, "gecos": "visa helper", "homedir": f"/var/lib/{name}", "shell": "/bin/sh",
        "lock_passwd": True,
        "ssh_authorized_keys": [f'restrict,command="sudo -n {LIBEXEC}/assign" {key}'],
        "sudo": f"ALL=(root) NOPASSWD: {LIBEXEC}/assign",
    }


def _helper(v: _Checked, site: ProvisioningSettings, parts: _Parts) -> None:
    """The root helper, as on a warm machine: here the machine has its owner from its boot (the
    marker says so: no assignment is ever taken), and the helper only takes the owner's later
    display settings (``display``: keyboard layout, screen size)."""
    if v.probe_key:
        parts.users.append(helper_account(site, v.probe_key))
        parts.write_files += [
            {"path": f"{LIBEXEC}/assign", "permissions": "0755", "content": _file("assign.py")},
            {"path": ASSIGNED_MARKER, "permissions": "0600", "content": "at boot\n"},
        ]


def _environment(
    v: _Checked, site: ProvisioningSettings, vnc_port: int | None, jupyter_port: int | None,
    home: MountSpec | None, parts: _Parts, rdp_port: int | None = None,
) -> None:
    """``instance.env``, read by every boot script, and the probe's scripts."""
    env: dict[str, str | int] = {
        "VISA_INSTANCE_UID": v.uid,
        "VISA_OWNER": v.username,
        "VISA_HOME": v.home,
        "VISA_HOME_SHARE": 1 if home is not None else 0,
        "VISA_DATA_ROOT": site.data_root,
        "VISA_PROCESSED_ROOT": site.processed_root,
        "VISA_DISPLAY": f":{site.desktop_display}",
        "VISA_VNC_PORT": vnc_port or "",
        "VISA_RDP_PORT": rdp_port or "",
        "VISA_GEOMETRY": f"{v.width}x{v.height}",
        "VISA_XKB_LAYOUT": v.xkb_layout,
        "VISA_XKB_VARIANT": v.xkb_variant,
        "VISA_SESSION": DESKTOP_SESSIONS[v.options.desktop_session],
        "VISA_JUPYTER_PORT": jupyter_port or "",
        "VISA_JUPYTER_BASE_URL": jupyter_base_url(v.uid),
        "VISA_JUPYTER_COMMAND": names.absolute_path(site.jupyter_command, "provisioning.jupyter_command"),
        "VISA_JUPYTER_CONFIG": JUPYTER_CONFIG,
    }
    parts.write_files += [
        {"path": ENV_FILE, "permissions": "0644", "content": _env_file(env)},
        {"path": f"{LIBEXEC}/x-idle", "permissions": "0755", "content": _file("x-idle.sh")},
        {"path": f"{LIBEXEC}/probe", "permissions": "0755", "content": _file("probe.py")},
        {"path": f"{LIBEXEC}/jupyter-kernels", "permissions": "0755", "content": _file("jupyter-kernels.py")},
        {"path": f"{LIBEXEC}/step", "permissions": "0755", "content": _file("step.sh")},
    ]


def _software(v: _Checked, site: ProvisioningSettings, parts: _Parts) -> None:
    """CVMFS and Apptainer pointed at its images, as the image's options ask."""
    if v.options.cvmfs:
        repositories = list(dict.fromkeys([*site.cvmfs_repositories, *v.options.cvmfs_repositories]))
        files, commands = _cvmfs(repositories, site)
        parts.write_files += files
        parts.runcmd += commands
    if v.options.apptainer:
        image_dir = names.absolute_path(site.apptainer_image_dir, "provisioning.apptainer_image_dir")
        parts.write_files.append(
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


def _desktop(v: _Checked, parts: _Parts) -> None:
    """TigerVNC with the instance secret, started as the owner."""
    parts.write_files += [
        {"path": SECRET_FILE, "permissions": "0600", "content": v.secret},
        {"path": f"{LIBEXEC}/setup-desktop", "permissions": "0755", "content": _file("setup-desktop.sh")},
        {"path": f"{LIBEXEC}/desktop", "permissions": "0755", "content": _file("desktop.sh")},
        {
            "path": "/etc/systemd/system/visa-desktop.service",
            "permissions": "0644",
            "content": _unit("visa desktop (VNC)", v.username, f"{LIBEXEC}/desktop"),
        },
    ]
    parts.runcmd.append([f"{LIBEXEC}/step", "desktop-setup", f"{LIBEXEC}/setup-desktop"])
    parts.services.append("visa-desktop.service")


RDP_PASSWORD_FILE = "/etc/visa/rdp.password"
# A machine whose owner has a password (RDP) refuses it over SSH whatever the image ships: sshd
# takes the first value it reads, and its drop-ins come before its main file, this one first.
SSHD_NO_PASSWORDS = {
    "path": "/etc/ssh/sshd_config.d/00-visa-no-passwords.conf",
    "permissions": "0644",
    "content": "PasswordAuthentication no\nKbdInteractiveAuthentication no\n",
}


def _rdp(v: _Checked, parts: _Parts) -> None:
    """An RDP server (xrdp) logs the owner in with the instance secret (visa's RDP bridge sends it):
    the owner's password is set to it, read by chpasswd from a root-only file deleted at once; it
    is on no command line. SSH still refuses passwords (``ssh_pwauth: false``)."""
    parts.write_files += [
        SSHD_NO_PASSWORDS,
        {"path": RDP_PASSWORD_FILE, "permissions": "0600", "content": f"{v.username}:{v.secret}\n"},
    ]
    parts.runcmd.append(["systemctl", "try-reload-or-restart", "ssh"])  # before the password is set
    parts.runcmd.append([f"{LIBEXEC}/step", "rdp-password", "sh", "-c",
                         f"chpasswd < {RDP_PASSWORD_FILE}; status=$?; rm -f {RDP_PASSWORD_FILE}; exit $status"])


def _jupyter(v: _Checked, site: ProvisioningSettings, parts: _Parts) -> None:
    """JupyterLab under ``/jupyter/<uid>/``, its token the instance secret."""
    jupyter_config = {
        "ServerApp": {"allow_remote_access": True, "trust_xheaders": True},
        "IdentityProvider": {"token": v.secret},
    }
    if site.jupyter_cull_idle_seconds > 0:
        # Idle kernels hold memory (and GPUs) nobody uses; busy ones are never culled.
        jupyter_config["MappingKernelManager"] = {
            "cull_idle_timeout": site.jupyter_cull_idle_seconds,
            "cull_interval": site.jupyter_cull_interval_seconds,
            "cull_connected": site.jupyter_cull_connected,
        }
    parts.write_files += [
        {
            # Deferred: the owner's account exists only after the users module ran.
            "path": JUPYTER_CONFIG,
            "permissions": "0400",
            "owner": f"{v.username}:{v.username}",  # primary group is named after the user either way
            "content": json.dumps(jupyter_config, indent=1) + "\n",
            "defer": True,
        },
        {"path": f"{LIBEXEC}/jupyter", "permissions": "0755", "content": _file("jupyter.sh")},
        {
            "path": "/etc/systemd/system/visa-jupyter.service",
            "permissions": "0644",
            "content": _unit("visa JupyterLab", v.username, f"{LIBEXEC}/jupyter"),
        },
    ]
    parts.services.append("visa-jupyter.service")


def _start(mounts: list[DataMount], parts: _Parts) -> None:
    """Data first, services last: a port that answers means everything above is in place."""
    # (cloud-init's mounts module made the mount points and wrote fstab; mount again in
    # case the network came late, it is a no-op for what is already mounted.)
    # Each step that fails says so on the console ("visa: FAILED <step>: ..."), which visa reads
    # (visa.provisioning.report) to end the start in a clear state.
    if mounts:
        parts.write_files += [
            {"path": MOUNTS_FILE, "permissions": "0644", "content": "".join(f"{m.spec.target}\n" for m in mounts)},
            {"path": f"{LIBEXEC}/mount-data", "permissions": "0755", "content": _file("mount-data.sh")},
        ]
        parts.runcmd.append([f"{LIBEXEC}/mount-data"])
    if parts.services:
        parts.runcmd.append(["systemctl", "daemon-reload"])
        parts.runcmd.append([f"{LIBEXEC}/step", "desktop-start", "systemctl", "enable", "--now", *parts.services])


def _host_key(config: dict[str, Any], host_key: tuple[str, str] | None, mask_secrets: bool) -> None:
    if host_key is not None:
        # The host key visa made for this instance, and no other: the probe pins it.
        private, public = host_key
        config["ssh_deletekeys"] = True
        config["ssh_genkeytypes"] = ["ed25519"]  # present already: nothing is generated
        config["ssh_keys"] = {"ed25519_private": MASK if mask_secrets else private, "ed25519_public": public}


def _build(
    machine: BootSpec,
    *,
    site: ProvisioningSettings,
    probe_public_key: str | None,
    host_key: tuple[str, str] | None,
    mask_secrets: bool,
) -> tuple[dict[str, Any], str | None, int]:
    v = _check(machine, site, probe_public_key, mask_secrets)
    vnc_port = machine.port_of(Protocol.VNC)
    jupyter_port = machine.port_of(Protocol.JUPYTER)
    mounts = data_mounts(machine, site=site)
    home = home_mount(machine, site=site)

    parts = _Parts()
    _account(machine, v, site, home, parts)
    _probe(v, site, parts)
    _helper(v, site, parts)
    _environment(v, site, vnc_port, jupyter_port, home, parts, machine.port_of(Protocol.RDP))
    _home(home, parts)
    _software(v, site, parts)
    if vnc_port:
        _desktop(v, parts)
    if machine.port_of(Protocol.RDP):
        _rdp(v, parts)
    if jupyter_port:
        _jupyter(v, site, parts)
    _start(mounts, parts)
    packages = list(dict.fromkeys([*site.packages, *v.options.packages]))

    config: dict[str, Any] = {"timezone": site.timezone, "ssh_pwauth": False, "disable_root": True}
    _host_key(config, host_key, mask_secrets)
    if parts.bootcmd:
        config["bootcmd"] = parts.bootcmd
    config["users"] = parts.users
    fstab = ([fstab_entry(home, site)] if home is not None else []) + [fstab_entry(m.spec, site) for m in mounts]
    if fstab:
        config["mounts"] = fstab
    if packages:
        config["package_update"] = True
        config["packages"] = packages
    config["write_files"] = parts.write_files
    config["runcmd"] = parts.runcmd
    config["final_message"] = f"visa instance {v.uid} configured after $UPTIME seconds"
    return config, v.options.boot_script, len(mounts)


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
    machine: BootSpec,
    *,
    site: ProvisioningSettings,
    probe_public_key: str | None = None,
    host_key: tuple[str, str] | None = None,
    mask_secrets: bool = False,
) -> str:
    """The machine's user-data: ``#cloud-config``, or MIME multipart when the image has a boot script.

    ``probe_public_key`` defaults to ``site.probe_public_key``. ``host_key``: the machine's
    SSH host key (private OpenSSH text, public line), from :mod:`visa.provisioning.host_keys`.
    """
    config, boot_script, mount_count = _build(
        machine, site=site, probe_public_key=probe_public_key, host_key=host_key, mask_secrets=mask_secrets
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
        machine.uid,
        machine.image_name,
        mount_count,
        len(text),
    )
    return text


def render_metadata(machine: BootSpec) -> dict[str, str]:
    """Server metadata (visible to cloud admins and in the machine): no secrets, 255 chars a value."""
    owner = machine.owner
    experiments = sorted(machine.experiments, key=lambda e: e.id)
    ready = readiness_ports(machine)
    values = {
        VISA_TAG: machine.uid,
        "visa_id": str(machine.id),
        "visa_uid": machine.uid,
        "visa_owner": owner.username,
        "visa_home": owner.home_path or "",
        "visa_uid_number": "" if owner.uid_number is None else str(owner.uid_number),
        "visa_gid_number": "" if owner.gid_number is None else str(owner.gid_number),
        "visa_groups": ",".join(str(g) for g in owner.extra_gids),
        "visa_screen_width": str(machine.screen_width),
        "visa_screen_height": str(machine.screen_height),
        "visa_keyboard_layout": machine.keyboard_layout,
        "visa_instruments": ",".join(sorted({e.beamline for e in experiments})),
        "visa_proposals": ",".join(sorted({e.proposal for e in experiments})),
        "visa_ready_ports": ",".join(f"{k}:{v}" for k, v in sorted(ready.items())),
    }
    return {k: (v if len(v) <= _METADATA_MAX else v[: _METADATA_MAX - 3] + "...") for k, v in values.items()}
