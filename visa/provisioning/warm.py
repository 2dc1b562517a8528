"""Warm machines: booted before anyone asks, given their owner when a create takes one.

A warm machine's user-data (:func:`render_warm_user_data`) holds nothing of anyone's: the
software, the desktop's and the probe's scripts, the machine's own desktop secret and SSH host
key, and the assignment helper (``files/assign.py``) that an ``assign`` account may run as root
through one sudo rule, its key forced to run that helper alone. At assignment visa sends the
helper one JSON document (:func:`assignment`): the owner's account, home share, experiment data
(as fstab lines) and the desktop's size and keyboard, every value checked here and again on the
machine. The helper takes each machine once (``docs/security.md``, *Warm machines*).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from visa.catalogue.models import Protocol
from visa.errors import InvalidInput
from visa.provisioning import names
from visa.provisioning.mounts import data_mounts, fstab_entry, home_mount, home_path
from visa.provisioning.site import DESKTOP_SESSIONS, check_site, image_options
from visa.provisioning.spec import BootSpec, Port
from visa.provisioning.userdata import (
    _TIMEZONE,
    LIBEXEC,
    SECRET_FILE,
    SSHD_NO_PASSWORDS,
    USER_DATA_MAX_BYTES,
    _cvmfs,
    _dump,
    _env_file,
    _file,
    _host_key,
    _multipart,
    _Parts,
    _unit,
    helper_account,
    jupyter_base_url,
)
from visa.settings import ProvisioningSettings

WARM_ENV = "/etc/visa/warm.env"
OWNER_KEY = "/etc/visa/owner-key"
KEYS_DIR = "/etc/visa/keys"
# The command visa's key asks for; the key's forced command runs the helper whatever is asked.
ASSIGN_COMMAND = "visa-assign"


@dataclass(frozen=True)
class WarmBoot:
    """A warm machine before anyone has it: its future instance uid and desktop secret, the image."""

    uid: str
    secret: str
    image_name: str
    image_options: dict[str, Any] = field(default_factory=dict)
    ports: tuple[Port, ...] = ()

    def port_of(self, protocol: Protocol) -> int | None:
        return next((p.port for p in self.ports if p.protocol == protocol), None)


def render_warm_user_data(
    machine: WarmBoot, *, site: ProvisioningSettings, probe_public_key: str | None, host_key: tuple[str, str],
) -> str:
    """The warm machine's user-data: everything but its owner. Needs visa's key (the probe's):
    it is the only way in, to check the machine and to give it its owner."""
    check_site(site)
    options = image_options(machine.image_options)
    uid = names.path_component(machine.uid, "uid")
    secret = names.secret(machine.secret, "secret")
    if not _TIMEZONE.fullmatch(site.timezone):
        raise InvalidInput("provisioning.timezone is not a time zone name", field="provisioning.timezone")
    key_text = probe_public_key or site.probe_public_key
    if not key_text:
        raise InvalidInput("a warm machine needs visa's key (provisioning.probe_public_key or the data "
                           "directory's probe key)", field="provisioning.probe_public_key")
    key = names.ssh_public_key(key_text)
    probe_user, assign_user = site.probe_username, site.assign_username
    vnc_port, jupyter_port = machine.port_of(Protocol.VNC), machine.port_of(Protocol.JUPYTER)

    parts = _Parts()
    parts.users += [
        {   # The probe's account; its sudo rule for the owner's idle time comes with the owner.
            "name": probe_user, "gecos": "visa activity probe", "homedir": f"/var/lib/{probe_user}",
            "shell": "/bin/sh", "lock_passwd": True,
            "ssh_authorized_keys": [f'restrict,command="{LIBEXEC}/probe" {key}'],
        },
        helper_account(site, key),  # visa's key may run the assignment helper as root, and nothing else
    ]
    env: dict[str, str | int] = {
        "VISA_INSTANCE_UID": uid,
        "VISA_DATA_ROOT": names.absolute_path(site.data_root, "provisioning.data_root"),
        "VISA_PROCESSED_ROOT": names.absolute_path(site.processed_root, "provisioning.processed_root"),
        "VISA_DISPLAY": f":{site.desktop_display}",
        "VISA_VNC_PORT": vnc_port or "",
        # An RDP server (xrdp) logs the owner in with the instance secret: the helper sets it.
        "VISA_RDP_PORT": machine.port_of(Protocol.RDP) or "",
        "VISA_SESSION": DESKTOP_SESSIONS[options.desktop_session],
        "VISA_JUPYTER_PORT": jupyter_port or "",
        "VISA_JUPYTER_BASE_URL": jupyter_base_url(uid),
        "VISA_JUPYTER_COMMAND": names.absolute_path(site.jupyter_command, "provisioning.jupyter_command"),
        "VISA_JUPYTER_CONFIG": "/etc/visa/jupyter_server_config.json",
        "VISA_SHELL": names.absolute_path(site.user_shell, "provisioning.user_shell"),
        "VISA_PROBE_USER": names.username(probe_user, "provisioning.probe_username"),
        "VISA_ASSIGN_USER": names.username(assign_user, "provisioning.assign_username"),
    }
    scripts = {"x-idle": "x-idle.sh", "probe": "probe.py", "step": "step.sh", "home-setup": "home-setup.sh",
               "mount-data": "mount-data.sh", "setup-desktop": "setup-desktop.sh", "desktop": "desktop.sh",
               "jupyter": "jupyter.sh", "assign": "assign.py"}
    parts.write_files += [
        {"path": WARM_ENV, "permissions": "0644", "content": _env_file(env)},
        {"path": SECRET_FILE, "permissions": "0600", "content": secret},
        {"path": OWNER_KEY, "permissions": "0644", "content": f'restrict,command="{site.sftp_server}" {key}\n'},
        # sshd reads the owner's key from a root-owned file: nothing is written into the home for it.
        {"path": "/etc/ssh/sshd_config.d/visa.conf", "permissions": "0644",
         "content": f"AuthorizedKeysFile .ssh/authorized_keys {KEYS_DIR}/%u\n"},
        *({"path": f"{LIBEXEC}/{name}", "permissions": "0755", "content": _file(source)}
          for name, source in scripts.items()),
    ]
    if machine.port_of(Protocol.RDP):  # the owner will have a password (xrdp's): never for SSH
        parts.write_files.append(dict(SSHD_NO_PASSWORDS))
    # The owner's services, as templates run as the owner's name (``systemctl enable --now
    # visa-desktop@alice.service``): the assignment starts them with no reload of systemd's units
    # (seconds on a small machine), done here at boot instead.
    templates = [("visa-desktop@.service", _unit("visa desktop (VNC)", "%i", f"{LIBEXEC}/desktop"), vnc_port),
                 ("visa-jupyter@.service", _unit("visa JupyterLab", "%i", f"{LIBEXEC}/jupyter"), jupyter_port)]
    parts.write_files += [{"path": f"/etc/systemd/system/{name}", "permissions": "0644", "content": unit}
                          for name, unit, port in templates if port]
    parts.runcmd.append(["systemctl", "daemon-reload"])
    # The NFS client's kernel modules, loaded now rather than at the owner's first data mount (a
    # second or more there); an image without them mounts nothing over NFS anyway.
    parts.runcmd.append(["sh", "-c", "modprobe -a nfs nfsv4 2>/dev/null || true"])
    parts.runcmd.append(["systemctl", "try-reload-or-restart", "ssh"])
    if options.cvmfs:
        repositories = list(dict.fromkeys([*site.cvmfs_repositories, *options.cvmfs_repositories]))
        files, commands = _cvmfs(repositories, site)
        parts.write_files += files
        parts.runcmd += commands
    packages = list(dict.fromkeys([*site.packages, *options.packages]))
    config: dict[str, Any] = {"timezone": site.timezone, "ssh_pwauth": False, "disable_root": True}
    _host_key(config, host_key, False)
    config["users"] = parts.users
    if packages:
        config["package_update"] = True
        config["packages"] = packages
    config["write_files"] = parts.write_files
    config["runcmd"] = parts.runcmd
    config["final_message"] = f"visa warm machine {uid} ready after $UPTIME seconds"
    text = _dump(config)
    if options.boot_script:
        text = _multipart(text, options.boot_script)
    if len(text.encode()) > USER_DATA_MAX_BYTES:
        raise InvalidInput("the warm machine's boot configuration is too large for the cloud", field="image")
    return text


def _mount_entry(entry: list[str]) -> dict[str, str]:
    source, target, kind, options = entry[:4]
    return {"source": source, "target": target, "type": kind, "options": options}


def assignment(machine: BootSpec, *, site: ProvisioningSettings) -> dict[str, Any]:
    """The document the helper receives: the owner's account, home and data, the desktop's
    size and keyboard. Checked as the user-data's values are (InvalidInput names the field)."""
    owner = machine.owner
    user = names.username(owner.username, "username")
    if user in (site.probe_username, site.assign_username):
        raise InvalidInput(f"the owner may not be named {user!r}", field="username")
    width, height = names.screen(machine.screen_width, machine.screen_height)
    layout, variant = names.keyboard(machine.keyboard_layout)
    home = home_mount(machine, site=site)
    return {
        "verb": "assign",
        "username": user,
        "uid": None if owner.uid_number is None else int(owner.uid_number),
        "gid": None if owner.gid_number is None else int(owner.gid_number),
        "groups": [int(g) for g in owner.extra_gids],
        "home": home_path(machine, site),
        "home_mount": None if home is None else _mount_entry(fstab_entry(home, site)),
        "mounts": [_mount_entry(fstab_entry(m.spec, site)) for m in data_mounts(machine, site=site)],
        "geometry": f"{width}x{height}",
        "xkb_layout": layout,
        "xkb_variant": variant,
    }


def display_document(width: int, height: int, keyboard_layout: str) -> dict[str, Any]:
    """The owner's display settings for the helper of a machine that has its owner (``display``)."""
    width, height = names.screen(width, height)
    layout, variant = names.keyboard(keyboard_layout)
    return {"verb": "display", "geometry": f"{width}x{height}", "xkb_layout": layout, "xkb_variant": variant}


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()
