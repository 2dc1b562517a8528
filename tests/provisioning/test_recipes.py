"""Image build recipes (images/recipes): scripts pass shellcheck, the Packer template and
its per-environment variables are well formed and agree with the catalogue."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 (test extra) validates the Packer template")

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "images" / "recipes"
BOOT_FILES = ROOT / "visa" / "provisioning" / "files"
SCRIPTS = sorted([*RECIPES.glob("scripts/*.sh"), *BOOT_FILES.glob("*.sh")])
ENVS = sorted(RECIPES.glob("envs/*.pkrvars.hcl"))


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps the quotes of string literals."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    return value


def _template() -> dict[str, Any]:
    with (RECIPES / "visa.pkr.hcl").open() as fh:
        return hcl2.load(fh)


def _variables() -> dict[str, dict[str, Any]]:
    return {_unquote(name): body for block in _template()["variable"] for name, body in block.items()}


def _env(path: Path) -> dict[str, Any]:
    with path.open() as fh:
        return {k: _unquote(v) for k, v in hcl2.load(fh).items() if not k.startswith("__")}


def test_scripts_pass_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        if os.environ.get("CI"):
            pytest.fail("shellcheck is missing (deploy/system-packages.txt)")
        pytest.skip("shellcheck is missing: apt-get install shellcheck")
    assert len(SCRIPTS) >= 10
    done = subprocess.run(
        ["shellcheck", "--shell=sh", "--severity=style", *map(str, SCRIPTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for script in SCRIPTS:
        text = script.read_text()
        assert text.startswith("#!/bin/sh\n") and "set -eu" in text, script.name


def test_template_structure() -> None:
    template = _template()
    plugin = template["packer"][0]["required_plugins"][0]["qemu"]
    assert _unquote(plugin["source"]) == "github.com/hashicorp/qemu"
    source = template["source"][0]['"qemu"']['"visa"']
    for key in ["iso_url", "iso_checksum", "disk_image", "output_directory", "vm_name", "ssh_username"]:
        assert key in source, key
    build = template["build"][0]
    assert _unquote(build["sources"]) == ["source.qemu.visa"]
    provisioner = build["provisioner"][0]['"shell"']
    assert "local.scripts" in provisioner["scripts"]
    # Every script the template names exists and is executable; every recipe script is used.
    named = set(re.findall(r"scripts/([a-z0-9-]+\.sh)", template["locals"][0]["scripts"]))
    on_disk = {p.name for p in RECIPES.glob("scripts/*.sh")}
    assert named == on_disk
    for name in on_disk:
        assert os.access(RECIPES / "scripts" / name, os.X_OK), name
    for seed in source["cd_files"]:
        assert (RECIPES / _unquote(seed).replace("${path.root}/", "")).is_file()


@pytest.mark.parametrize("env_file", ENVS, ids=[p.name.split(".")[0] for p in ENVS])
def test_environment_variables_match_the_catalogue(env_file: Path) -> None:
    variables = _variables()
    values = _env(env_file)
    assert set(values) <= set(variables), set(values) - set(variables)
    required = {name for name, body in variables.items() if "default" not in body}
    assert required <= set(values), required - set(values)

    name = env_file.name.split(".")[0]
    catalogue = ROOT / "images" / f"{name}.yaml"
    if not catalogue.exists():
        pytest.skip(f"no catalogue entry images/{name}.yaml")
    spec = yaml.safe_load(catalogue.read_text())
    options = spec.get("options") or {}
    protocols = {p["protocol"] for p in spec["protocols"]}
    assert values["image_name"] == spec.get("cloud_image", spec.get("cloud_image_ref"))
    assert values["desktop"] == ("VNC" in protocols)
    assert values["jupyterlab"] == ("JUPYTER" in protocols)
    assert values["apptainer"] == bool(options.get("apptainer"))
    if values["desktop"]:
        assert values.get("desktop_session", "xfce") == options.get("desktop_session", "xfce")


def test_every_catalogue_image_has_a_recipe() -> None:
    names = {p.name.split(".")[0] for p in ENVS}
    for catalogue in sorted((ROOT / "images").glob("*.yaml")):
        assert catalogue.stem in names, f"images/{catalogue.name} has no recipe in images/recipes/envs/"


def test_seed_is_valid_cloud_config(tmp_path: Path) -> None:
    from tests.provisioning.cloudinit import validate

    validate((RECIPES / "seed" / "user-data").read_text(), tmp_path)


def test_desktop_recipe_installs_what_the_boot_scripts_run() -> None:
    desktop = (RECIPES / "scripts" / "desktop.sh").read_text()
    # command in visa/provisioning/files -> Debian package that ships it
    needed = {
        "Xtigervnc": "tigervnc-standalone-server",
        "vncpasswd": "tigervnc-tools",
        "xauth": "xauth",
        "mcookie": "util-linux",
        "setxkbmap": "x11-xkb-utils",
        "dbus-run-session": "dbus-daemon",
        "xprintidle": "xprintidle",
    }
    boot = "".join(p.read_text() for p in BOOT_FILES.glob("*.sh"))
    for command, package in needed.items():
        assert command in boot, command
        assert package in desktop, package
    base = (RECIPES / "scripts" / "base.sh").read_text()
    for package in ["cloud-init", "sudo", "python3", "nfs-common", "ceph-common", "autofs", "openssh-server"]:
        assert package in base, package


def test_the_local_builder_runs_the_scripts_packer_runs() -> None:
    """images/recipes/build.py (make image) picks the same scripts, in the same order, as the template."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("image_build", RECIPES / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    order = re.findall(r"scripts/([a-z0-9-]+\.sh)", _template()["locals"][0]["scripts"])
    for env_file in ENVS:
        env = env_file.name.split(".")[0]
        values = build.env_values(env)
        assert values == _env(env_file), env
        chosen = build.scripts(values)
        assert chosen == [s for s in order if s in chosen], env
        assert ("desktop.sh" in chosen) == values["desktop"] and ("jupyterlab.sh" in chosen) == values["jupyterlab"]
        assert ("apptainer.sh" in chosen) == values["apptainer"]
    # The cache key follows the recipe: another environment, another key.
    assert build.recipe_hash("sandbox") != build.recipe_hash("desktop")


def _builder():
    import importlib.util

    spec = importlib.util.spec_from_file_location("image_build", RECIPES / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build


def test_the_image_build_shows_a_progress_bar_on_a_terminal_only(tmp_path, monkeypatch, capfd) -> None:
    """On a terminal the commands' output goes to the build's log under a bar of its steps, and the
    log's end is shown when one fails; elsewhere it streams as before."""
    import sys

    build = _builder()
    log = tmp_path / "image.log"
    with build.progress_bar(2, log):  # not a terminal: no bar, the output where it was
        build.run("sh", "-c", "echo streamed")
    assert "streamed" in capfd.readouterr().out and not log.exists()

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    with build.progress_bar(2, log):
        assert build._bar is not None
        build.run("sh", "-c", "echo step one")
        assert build._bar[0].tasks[0].completed == 1
        with pytest.raises(subprocess.CalledProcessError):
            build.run("sh", "-c", "echo the cause; exit 3")
    assert build._bar is None
    shown = capfd.readouterr()
    assert "step one" in log.read_text() and "step one" not in shown.out
    assert "the cause" in log.read_text() and "the cause" in shown.err  # the failing step's output
