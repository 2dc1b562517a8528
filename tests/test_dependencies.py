"""The dependencies a fresh clone installs: requirements.lock pins every one of pyproject's, within
pyproject's ranges, and the libraries whose internals visa uses have an upper bound."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
FIX = "run `.venv/bin/python scripts/lock.py` in the environment the suite passes in"

# visa imports their internals: uvicorn's protocol classes and private types (visa.gateway.wsprotocol),
# gunicorn's arbiter and gthread worker and uvicorn-worker's worker (visa.serving), paramiko's SFTP
# wire constants (visa.clouds.sftp), openstacksdk (visa.clouds.openstack).
BOUNDED = {"uvicorn", "gunicorn", "uvicorn-worker", "paramiko", "openstacksdk"}


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra_reqs in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra_reqs]
    return reqs


def lock() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"requirements.lock: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_the_lock_pins_every_dependency_within_its_range() -> None:
    pins = lock()
    missing, outside = [], []
    for req in requirements():
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name not in pins:
            missing.append(str(req))
        elif not req.specifier.contains(pins[name], prereleases=True):
            outside.append(f"{req} (locked {pins[name]})")
    assert not missing, f"not in requirements.lock: {missing}; {FIX}"
    assert not outside, f"locked outside pyproject's range: {outside}; {FIX}"


def test_the_lock_leaves_out_the_project_and_the_installer() -> None:
    assert not {"visa", "pip", "setuptools"} & lock().keys()


def test_libraries_used_by_their_internals_have_an_upper_bound() -> None:
    unbounded = [
        str(req)
        for req in requirements()
        if canonicalize_name(req.name) in BOUNDED and not any(s.operator in ("<", "<=", "~=", "==") for s in req.specifier)
    ]
    seen = {canonicalize_name(r.name) for r in requirements()}
    assert seen >= BOUNDED, f"no longer a dependency: {BOUNDED - seen}; update this test"
    assert not unbounded, f"no upper bound: {unbounded}"


def test_setup_installs_from_the_lock_and_reinstalls_when_it_changes() -> None:
    setup = (ROOT / "scripts/setup.sh").read_text()
    installs = [line for line in setup.splitlines() if "pip install" in line and "-e" in line]
    assert installs and all("requirements.lock" in line for line in installs), installs
    assert "requirements.lock -nt" in setup
