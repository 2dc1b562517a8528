#!/usr/bin/python3 -I
"""Gives a warm machine its owner: the only command visa's key may run as the assignment account
(forced by its key, run as root through one sudo rule). Standard library only.

A warm machine boots with no owner: nothing of anyone's is on it. When a scientist's create
takes it, visa sends one JSON document on stdin, at most MAX_BYTES:

* ``{"verb": "check"}``: prints ``ok`` once the boot has finished and no owner was given yet;
* ``{"verb": "assign", ...}``: the owner's account (name, uid, gid, groups, home), their home
  share and experiment data (fstab lines), the desktop's size and keyboard; then the desktop
  and JupyterLab start as the owner. Once only: a second assignment is refused, whatever it says.
* ``{"verb": "display", ...}``: once the machine has its owner (a warm machine assigned, or a
  machine that booted with one), the desktop's size and keyboard layout the owner chose since:
  the layout now, as the owner, on the running desktop; both at the desktop's next start.

Every value is checked here again, strictly (visa checked it too): an unknown or missing field,
a name or path outside its pattern, a mount outside the data roots written at boot, raw data
asked writable, are refused before anything changes. Nothing reaches a shell: every command is
an argument list. visa reads the exit status and the word ``ok``, never what else is printed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

MAX_BYTES = 64 * 1024
LIBEXEC = "/usr/local/libexec/visa"
WARM_ENV = "etc/visa/warm.env"
INSTANCE_ENV = "etc/visa/instance.env"
MARKER = "etc/visa/assigned"
OWNER_KEY = "etc/visa/owner-key"
KEYS_DIR = "etc/visa/keys"
SECRET = "etc/visa/desktop.secret"
MOUNTS_FILE = "etc/visa/mounts"
JUPYTER_CONFIG = "etc/visa/jupyter_server_config.json"
SUDOERS = "etc/sudoers.d/visa-probe"
BOOT_FINISHED = "var/lib/cloud/instance/boot-finished"

_USERNAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_COMPONENT = re.compile(r"[A-Za-z0-9_.+-]{1,128}")
_NFS_SOURCE = re.compile(r"[A-Za-z0-9.-]{1,253}(,[A-Za-z0-9.-]{1,253}){0,8}:(/[A-Za-z0-9_.+-]{1,128}){0,16}/?")
_OPTIONS = re.compile(r"[A-Za-z0-9_.=/-]{1,64}(,[A-Za-z0-9_.=/-]{1,64}){0,31}")
_GEOMETRY = re.compile(r"[0-9]{3,4}x[0-9]{3,4}")
_XKB = re.compile(r"[a-z]{0,8}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{8,128}")
# Accounts of the system, visa's own among them: never an owner's.
RESERVED = {"root", "daemon", "bin", "sys", "sync", "nobody", "sshd", "messagebus", "systemd-network"}
SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/opt", "/proc", "/root", "/run", "/sbin",
               "/srv", "/sys", "/tmp", "/usr", "/var", "/cvmfs", "/mnt", "/media")
# Options that would let a file on the share run as someone else, or open a device.
FORBIDDEN_OPTIONS = {"suid", "dev", "exec", "user", "users", "owner", "group"}
MIN_ID, MAX_ID = 1000, 2**31 - 2
FIELDS = {"verb", "username", "uid", "gid", "groups", "home", "home_mount", "mounts", "geometry",
          "xkb_layout", "xkb_variant"}

# A command as an argument list, and optionally what it reads on stdin (never an argument).
Run = Callable[..., int]
_STARTED = time.monotonic()
_RAN = False  # whether a command ran: a check answers without a line on the console


def _mark(step: str) -> None:
    """The time since the helper started, per step, on the console (the machine's own log; visa
    reads no time from here): where an assignment's seconds go."""
    try:
        with open("/dev/console", "w") as console:
            console.write(f"visa-assign: {time.monotonic() - _STARTED:.2f} s {step}\n")
    except OSError:
        pass


class Refused(Exception):
    """The document is not one visa would send (or the machine is not in a state to take it)."""


def read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            env[key.strip()] = value.strip()
    return env


def _int_id(value: Any, name: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if type(value) is not int or not MIN_ID <= value <= MAX_ID:
        raise Refused(f"{name} is not a uid/gid of a person")
    return value


def _path(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or os.path.normpath(value) != value:
        raise Refused(f"{name} is not a normalised absolute path")
    parts = value.strip("/").split("/")
    if not all(_COMPONENT.fullmatch(p) and p not in (".", "..") for p in parts):
        raise Refused(f"{name} has a component that is not a plain name")
    return value


def _home(value: Any) -> str:
    home = _path(value, "home")
    if home == "/" or any(home == d or home.startswith(d + "/") for d in SYSTEM_DIRS) or home.count("/") < 2:
        raise Refused("home is a system directory or a home root")
    return home


def _mount(value: Any, env: dict[str, str], *, home: str | None = None) -> dict[str, str]:
    if not isinstance(value, dict) or set(value) != {"source", "target", "type", "options"}:
        raise Refused("a mount has other fields than source, target, type and options")
    kind, options = value["type"], value["options"]
    if kind not in ("nfs", "ceph", "none"):
        raise Refused("a mount's type is not nfs, ceph or none (bind)")
    if not isinstance(options, str) or not _OPTIONS.fullmatch(options):
        raise Refused("a mount's options are not a plain list")
    opts = options.split(",")
    access = {"ro", "rw"} & set(opts)
    if len(access) != 1 or set(opts) & FORBIDDEN_OPTIONS:
        raise Refused("a mount's options are not visa's")
    source = value["source"]
    if kind == "none":
        if "bind" not in opts:
            raise Refused("a mount of type none is not a bind mount")
        _path(source, "source")
    elif not isinstance(source, str) or not _NFS_SOURCE.fullmatch(source) or "/../" in source + "/" \
            or "/./" in source + "/":
        raise Refused("a mount's source is not host:/path")
    target = _path(value["target"], "target")
    if home is not None:
        if target != home:
            raise Refused("the home share is not mounted at the home")
        if "rw" not in opts:
            raise Refused("the home share is not writable")
        return {"source": source, "target": target, "type": kind, "options": options}
    data, processed = env.get("VISA_DATA_ROOT", ""), env.get("VISA_PROCESSED_ROOT", "")
    parent = target.rsplit("/", 2)[0]
    if target.count("/") - parent.count("/") != 2 or parent not in (data, processed) or not parent:
        raise Refused("a mount's target is not <data root>/<proposal>/<beamline>")
    if parent == data and "rw" in opts:
        raise Refused("raw data may only be mounted read-only")
    return {"source": source, "target": target, "type": kind, "options": options}


def parse(document: Any, env: dict[str, str]) -> dict[str, Any]:
    """The assignment, every value checked; Refused names the first that is not visa's kind."""
    if not isinstance(document, dict) or document.get("verb") != "assign":
        raise Refused("not an assignment")
    if set(document) != FIELDS:
        raise Refused("the fields are not an assignment's")
    username = document["username"]
    reserved = RESERVED | {env.get("VISA_PROBE_USER", "visa"), env.get("VISA_ASSIGN_USER", "visa-assign")}
    if not isinstance(username, str) or not _USERNAME.fullmatch(username) or username in reserved:
        raise Refused("username is not an account name visa gives")
    groups = document["groups"]
    if not isinstance(groups, list) or len(groups) > 64:
        raise Refused("groups is not a list of gids")
    home = _home(document["home"])
    home_mount = document["home_mount"]
    mounts = document["mounts"]
    if not isinstance(mounts, list) or len(mounts) > 400:
        raise Refused("mounts is not a list of mounts")
    geometry, layout, variant = _display_values(document)
    checked_mounts = [_mount(m, env) for m in mounts]
    if len({m["target"] for m in checked_mounts}) != len(checked_mounts):
        raise Refused("two mounts have one target")
    return {
        "username": username,
        "uid": _int_id(document["uid"], "uid", optional=True),
        "gid": _int_id(document["gid"], "gid", optional=True),
        "groups": [_int_id(g, "groups") for g in groups],
        "home": home,
        "home_mount": None if home_mount is None else _mount(home_mount, env, home=home),
        "mounts": checked_mounts,
        "geometry": geometry,
        "xkb_layout": layout,
        "xkb_variant": variant,
    }


DISPLAY_FIELDS = {"verb", "geometry", "xkb_layout", "xkb_variant"}


def _display_values(document: dict[str, Any]) -> tuple[str, str, str]:
    geometry, layout, variant = document["geometry"], document["xkb_layout"], document["xkb_variant"]
    if not isinstance(geometry, str) or not _GEOMETRY.fullmatch(geometry):
        raise Refused("geometry is not WIDTHxHEIGHT")
    if not isinstance(layout, str) or not isinstance(variant, str) or not layout \
            or not _XKB.fullmatch(layout) or not _XKB.fullmatch(variant):
        raise Refused("the keyboard is not an XKB layout and variant")
    return geometry, layout, variant


def display(document: Any, root: Path, run: Run) -> None:
    """The owner's new screen size and keyboard: in instance.env (the desktop's next start) and,
    for the layout, on the running desktop now (as the owner; a desktop not running is no failure)."""
    if not isinstance(document, dict) or set(document) != DISPLAY_FIELDS or document["verb"] != "display":
        raise Refused("the fields are not a display change's")
    geometry, layout, variant = _display_values(document)
    if not (root / MARKER).exists():
        raise Refused("this machine has no owner yet")
    path = root / INSTANCE_ENV
    env = read_env(path)
    user, home = env.get("VISA_OWNER", ""), env.get("VISA_HOME", "")
    if not _USERNAME.fullmatch(user) or not home.startswith("/"):
        raise Refused("this machine has no owner yet")
    values = {"VISA_GEOMETRY": geometry, "VISA_XKB_LAYOUT": layout, "VISA_XKB_VARIANT": variant}
    lines = [line for line in path.read_text().splitlines() if line.partition("=")[0] not in values]
    _write(path, "\n".join(lines + [f"{k}={v}" for k, v in values.items()]) + "\n", 0o644)
    if env.get("VISA_VNC_PORT"):
        run(["runuser", "-u", user, "--", "env", f"DISPLAY={env.get('VISA_DISPLAY', ':1')}",
             f"XAUTHORITY={home}/.Xauthority", "setxkbmap", "-layout", layout, *(["-variant", variant] if variant else [])])


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _fstab(m: dict[str, str]) -> str:
    return f"{m['source']} {m['target']} {m['type']} {m['options']} 0 0\n"


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"{what} exited with status {status}")


def assign(a: dict[str, Any], env: dict[str, str], root: Path, run: Run) -> None:
    """Carry out a checked assignment. The marker is taken first: a second one never starts."""
    marker = root / MARKER
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except FileExistsError:
        raise Refused("this machine was given its owner already") from None
    user, home = a["username"], a["home"]
    if a["gid"] is not None:
        _check(run(["groupadd", "-o", "-g", str(a["gid"]), user]), "groupadd")
    for gid in a["groups"]:
        if run(["getent", "group", str(gid)]) != 0:
            _check(run(["groupadd", "-g", str(gid), f"visa-g{gid}"]), "groupadd")
    useradd = ["useradd", "-d", home, "-s", env.get("VISA_SHELL", "/bin/bash"), "-c", ""]
    useradd += ["-M"] if a["home_mount"] is not None else ["-m"]
    if a["uid"] is not None:
        useradd += ["-u", str(a["uid"])]
    useradd += ["-g", user] if a["gid"] is not None else ["-U"]
    if a["groups"]:
        useradd += ["-G", ",".join(str(g) for g in a["groups"])]
    _check(run([*useradd, user]), "useradd")
    _check(run(["passwd", "-l", user]), "passwd")
    if env.get("VISA_RDP_PORT"):
        # The RDP server (xrdp) logs the owner in with the instance secret, as visa's bridge sends
        # it: chpasswd reads it on stdin, never on a command line. SSH refuses passwords still.
        secret = (root / SECRET).read_text().strip()
        if not _SECRET.fullmatch(secret):
            raise Refused("the machine's secret is not one visa writes")
        _check(run(["chpasswd"], stdin=f"{user}:{secret}\n".encode()), "chpasswd")

    values = {"VISA_OWNER": user, "VISA_HOME": home, "VISA_HOME_SHARE": "1" if a["home_mount"] else "0",
              "VISA_GEOMETRY": a["geometry"], "VISA_XKB_LAYOUT": a["xkb_layout"], "VISA_XKB_VARIANT": a["xkb_variant"]}
    base = (root / WARM_ENV).read_text()
    _write(root / INSTANCE_ENV, base + "".join(f"{k}={v}\n" for k, v in values.items()), 0o644)

    mounts = ([a["home_mount"]] if a["home_mount"] else []) + a["mounts"]
    if mounts:
        with open(root / "etc/fstab", "a") as fh:
            fh.write("".join(_fstab(m) for m in mounts))
        for m in mounts:
            (root / m["target"].lstrip("/")).mkdir(parents=True, exist_ok=True)
    if a["home_mount"] is not None:
        _check(run([f"{LIBEXEC}/step", "home-setup", f"{LIBEXEC}/home-setup"]), "home-setup")
    if a["mounts"]:
        _write(root / MOUNTS_FILE, "".join(m["target"] + "\n" for m in a["mounts"]), 0o644)
        run([f"{LIBEXEC}/mount-data"])  # says itself what did not mount; the desktop starts either way

    # visa's key may run sftp-server as the owner (file transfers), the probe may read the owner's idle time.
    owner_key = root / OWNER_KEY
    if owner_key.exists():
        _write(root / KEYS_DIR / user, owner_key.read_text(), 0o644)
    probe_user = env.get("VISA_PROBE_USER", "visa")
    _write(root / SUDOERS, f"{probe_user} ALL=({user}) NOPASSWD: {LIBEXEC}/x-idle\n", 0o440)

    # The services are the boot's templates (visa-desktop@.service, visa-jupyter@.service), run
    # as the instance's name: enabled and started without reloading systemd (slow on a small machine).
    services = []
    if env.get("VISA_VNC_PORT"):
        _check(run([f"{LIBEXEC}/step", "desktop-setup", f"{LIBEXEC}/setup-desktop"]), "setup-desktop")
        services.append(f"visa-desktop@{user}.service")
    if env.get("VISA_JUPYTER_PORT"):
        secret = (root / SECRET).read_text().strip()
        config = {"ServerApp": {"allow_remote_access": True, "trust_xheaders": True},
                  "IdentityProvider": {"token": secret}}
        _write(root / JUPYTER_CONFIG, json.dumps(config, indent=1) + "\n", 0o400)
        _check(run(["chown", f"{user}:", str(root / JUPYTER_CONFIG)]), "chown")
        services.append(f"visa-jupyter@{user}.service")
    if services:
        _check(run([f"{LIBEXEC}/step", "desktop-start", "systemctl", "enable", "--now", "--no-reload", *services]),
               "desktop-start")


def check(root: Path) -> None:
    if (root / MARKER).exists():
        raise Refused("this machine was given its owner already")
    if not (root / BOOT_FINISHED).exists() or not (root / WARM_ENV).exists():
        raise Refused("the machine has not finished booting")


def main(stdin: bytes, root: Path, run: Run) -> tuple[int, str]:
    """(exit status, the one line printed): 0 and ``ok``, else 1 and why (visa reads only the status)."""
    try:
        if len(stdin) > MAX_BYTES:
            raise Refused("the document is too long")
        try:
            document = json.loads(stdin.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise Refused("the document is not JSON") from None
        if document == {"verb": "check"}:
            check(root)
            return 0, "ok"
        if isinstance(document, dict) and document.get("verb") == "display":
            display(document, root, run)
            return 0, "ok"
        env = read_env(root / WARM_ENV)
        assignment = parse(document, env)
        assign(assignment, env, root, run)
        return 0, "ok"
    except Refused as exc:
        return 1, f"refused: {exc}"
    except (OSError, RuntimeError) as exc:
        return 1, f"failed: {exc}"


def _run(argv: Sequence[str], stdin: bytes | None = None) -> int:
    """A command, its output on the console as at boot: a step's "visa: FAILED ..." line is what
    visa reads there (Provider.boot_report), never this helper's answer."""
    global _RAN
    _RAN = True
    try:
        console = open("/dev/console", "w")  # noqa: SIM115 (closed below)
    except OSError:
        console = None
    try:
        out = console or sys.stderr
        if stdin is not None:
            return subprocess.run(list(argv), input=stdin, stdout=out, stderr=out, check=False).returncode
        return subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=False).returncode
    finally:
        if console is not None:
            console.close()
        _mark(" ".join(os.path.basename(a) for a in argv[:3]))


if __name__ == "__main__":
    status, line = main(sys.stdin.buffer.read(MAX_BYTES + 1), Path("/"), _run)
    if _RAN:
        _mark(f"answered {line.split(':')[0]}")
    print(line)
    sys.exit(status)
