#!/usr/bin/env python3
"""Build a visa image on this machine, from Debian's packages, with no VM and no loop device.

    python3 images/recipes/build.py [ENV]      (make image; ENV defaults to "sandbox")

The same recipe scripts Packer runs (``scripts/*.sh``, chosen by ``envs/ENV.pkrvars.hcl``)
run here in a debootstrap'd Debian 12 chroot; the file system image is made with
``mkfs.ext4 -d`` and converted to qcow2, and the kernel and initrd are kept beside it for a
direct kernel boot (Glance ``kernel_id`` / ``ramdisk_id``: no boot loader in the image).

The result is cached by the hash of the recipe (the scripts, the environment file and this
file) under ``$VISA_IMAGE_CACHE``, else ``$XDG_CACHE_HOME/visa-images``, else
``/var/cache/visa-images``: a second build of an unchanged recipe is instant, and every
checkout on the machine shares it. It prints the path of the build's ``manifest.json``.

Needs root (debootstrap, chroot) and Debian's archive. The CVMFS client and Apptainer are not
in Debian's archive: their scripts keep only the configuration (``VISA_OFFLINE_BUILD=1``).
Standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
SUITE = "bookworm"
MIRROR = os.environ.get("VISA_IMAGE_MIRROR", "http://deb.debian.org/debian")
DISK_SIZE = os.environ.get("VISA_IMAGE_DISK_SIZE", "4G")
# debootstrap's --include cannot configure python3-cryptography (cloud-init): apt does it later.
BASE_PACKAGES = ["systemd-sysv", "ca-certificates", "ifupdown", "iproute2", "dbus"]
KERNEL_PACKAGES = ["linux-image-cloud-amd64", "initramfs-tools"]


def log(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    if os.environ.get("VISA_IMAGE_CACHE"):
        return Path(os.environ["VISA_IMAGE_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "visa-images"
    return Path("/var/cache/visa-images")


def env_values(env: str) -> dict[str, object]:
    """The ``key = value`` lines of an environment's variables file (strings, booleans, lists)."""
    values: dict[str, object] = {}
    for line in (HERE / "envs" / f"{env}.pkrvars.hcl").read_text().splitlines():
        match = re.fullmatch(r"\s*([a-z_]+)\s*=\s*(.+?)\s*", line)
        if match and not line.lstrip().startswith("#"):
            values[match[1]] = json.loads(match[2])
    return values


def scripts(values: dict[str, object]) -> list[str]:
    """The scripts Packer's template runs for these values, in its order."""
    chosen = ["base.sh", "cvmfs.sh"]
    chosen += ["desktop.sh"] if values.get("desktop") else []
    chosen += ["jupyterlab.sh"] if values.get("jupyterlab") else []
    chosen += ["apptainer.sh"] if values.get("apptainer") else []
    return [*chosen, "packages.sh", "cleanup.sh"]


def recipe_hash(env: str) -> str:
    digest = hashlib.sha256()
    files = [Path(__file__), HERE / "envs" / f"{env}.pkrvars.hcl", *sorted((HERE / "scripts").glob("*.sh"))]
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(f"{SUITE} {MIRROR} {DISK_SIZE} {BASE_PACKAGES} {KERNEL_PACKAGES}".encode())
    return digest.hexdigest()[:16]


# While a terminal shows the build's progress bar: (the bar, its task, the log the commands write to).
_bar: tuple[Any, Any, IO[bytes]] | None = None


@contextlib.contextmanager
def progress_bar(steps: int, log_path: Path) -> Iterator[None]:
    """A progress bar of the build's commands, on a terminal where rich is installed (this script
    needs nothing but the standard library): the commands' output then goes to ``log_path``, and
    its end is shown when one fails. Elsewhere (a pipe, CI's log) the output streams as it comes."""
    global _bar
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        yield
        return
    if not sys.stdout.isatty():
        yield
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with log_path.open("ab") as out, Progress(*columns, console=Console(stderr=True)) as bar:
        _bar = (bar, bar.add_task("image", total=steps), out)
        try:
            yield
        finally:
            _bar = None


def run(*cmd: str | Path, **kwargs: object) -> None:
    shown = " ".join(str(c) for c in cmd[:6]) + (" ..." if len(cmd) > 6 else "")
    if _bar is None:
        log(shown)
        subprocess.run([str(c) for c in cmd], check=True, stdin=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
        return
    bar, task, out = _bar
    bar.update(task, description=shown[:60])
    out.write(f"$ {shown}\n".encode())
    out.flush()
    try:
        subprocess.run([str(c) for c in cmd], check=True, stdin=subprocess.DEVNULL, stdout=out,  # type: ignore[call-overload]
                       stderr=subprocess.STDOUT, **kwargs)
    except subprocess.CalledProcessError:
        out.flush()
        tail = Path(out.name).read_bytes()[-4000:].decode(errors="replace")
        log(f"{shown} failed; the end of {out.name}:\n{tail}")
        raise
    bar.advance(task)


@contextlib.contextmanager
def chroot_mounts(root: Path) -> Iterator[None]:
    mounted: list[Path] = []
    try:
        for kind, target, options in (
            ("proc", "proc", []),
            ("sysfs", "sys", []),
            ("devtmpfs", "dev", []),
            ("devpts", "dev/pts", ["-o", "gid=5,mode=620"]),
        ):
            path = root / target
            path.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "-t", kind, *options, kind, str(path)], check=True)
            mounted.append(path)
        yield
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", "-l", str(path)], check=False)


def build(env: str) -> Path:
    values = env_values(env)
    name = str(values["image_name"])
    digest = recipe_hash(env)
    out = cache_root() / f"{name}-{digest}"
    manifest = out / "manifest.json"
    if manifest.is_file():
        log(f"{name}: cached ({out})")
        return manifest
    if os.geteuid() != 0:
        raise SystemExit("building an image needs root (debootstrap and chroot)")
    started = time.monotonic()
    work = out.with_name(out.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    root = work / "root"
    work.mkdir(parents=True)
    extra_cas = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    # debootstrap, apt-get update and install, the scripts, the CA updates, mkfs and qemu-img.
    steps = 5 + len(scripts(values)) + (2 if extra_cas else 0)
    with progress_bar(steps, out.with_name(out.name + ".log")):
        _build(values, env, name, digest, work, root, extra_cas, started)
    shutil.rmtree(out, ignore_errors=True)
    work.rename(out)
    log(f"{name}: built in {time.monotonic() - started:.0f} s ({out})")
    return manifest


def _build(values: dict[str, object], env: str, name: str, digest: str, work: Path, root: Path,
           extra_cas: list[Path], started: float) -> None:
    run("debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, root, MIRROR)
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    # No service may start inside the chroot.
    (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
    (root / "usr/sbin/policy-rc.d").chmod(0o755)
    (root / "etc/fstab").write_text("LABEL=visa-root / ext4 defaults,errors=remount-ro 0 1\n")
    (root / "etc/hostname").write_text("visa\n")
    environment = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "DEBIAN_FRONTEND": "noninteractive",
        "VISA_OFFLINE_BUILD": "1",
        "DESKTOP_SESSION": str(values.get("desktop_session", "xfce")),
        "DESKTOP_BROWSER": str(values.get("browser", "firefox-esr")),
        "EXTRA_PACKAGES": " ".join(values.get("extra_packages", [])),  # type: ignore[arg-type]
        "CVMFS_DOMAIN": str(values.get("cvmfs_domain", "esrf.fr")),
    }
    # This machine's own extra CA certificates (a TLS-inspecting proxy to PyPI) are trusted
    # during the build only.
    with chroot_mounts(root):
        run("chroot", root, "apt-get", "update", env=environment)
        for ca in extra_cas:
            shutil.copy(ca, root / "usr/local/share/ca-certificates" / f"visa-build-{ca.name}")
        if extra_cas:
            run("chroot", root, "update-ca-certificates", env=environment)
        run(
            "chroot",
            root,
            "apt-get",
            "install",
            "-y",
            "--no-install-recommends",
            *KERNEL_PACKAGES,
            env=environment,
        )
        for script in scripts(values):
            shutil.copy(HERE / "scripts" / script, root / "tmp" / script)
            run("chroot", root, "sh", "-eu", f"/tmp/{script}", env=environment)
            (root / "tmp" / script).unlink()
        if extra_cas:
            for ca in (root / "usr/local/share/ca-certificates").glob("visa-build-*"):
                ca.unlink()
            run("chroot", root, "update-ca-certificates", "--fresh", env=environment)
        # cloud-init looks only where a cloud puts its data: no minutes lost probing others.
        (root / "etc/cloud/cloud.cfg.d/90-visa-datasources.cfg").write_text(
            "datasource_list: [ConfigDrive, OpenStack, NoCloud, None]\n"
        )
    (root / "usr/sbin/policy-rc.d").unlink()
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise SystemExit("the image has no kernel or initrd in /boot")
    shutil.copy(kernels[-1], work / "vmlinuz")
    shutil.copy(initrds[-1], work / "initrd.img")
    raw = work / "disk.raw"
    run("mkfs.ext4", "-q", "-F", "-L", "visa-root", "-d", root, raw, DISK_SIZE)
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, work / "disk.qcow2")
    raw.unlink()
    shutil.rmtree(root)
    (work / "manifest.json").write_text(
        json.dumps(
            {
                "name": name,
                "env": env,
                "recipe_hash": digest,
                "disk": "disk.qcow2",
                "disk_format": "qcow2",
                "kernel": "vmlinuz",
                "initrd": "initrd.img",
                # Direct kernel boot: Glance's os_command_line property.
                # The serial console last: it is /dev/console, the log the cloud keeps.
                "command_line": "root=LABEL=visa-root ro console=tty0 console=ttyS0",
                "built_seconds": round(time.monotonic() - started),
            },
            indent=2,
        )
        + "\n"
    )


def main(argv: list[str]) -> int:
    env = argv[0] if argv else "sandbox"
    if not (HERE / "envs" / f"{env}.pkrvars.hcl").is_file():
        print(f"no recipe images/recipes/envs/{env}.pkrvars.hcl", file=sys.stderr)
        return 2
    print(build(env))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
