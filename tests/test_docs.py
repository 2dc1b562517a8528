"""The documentation site: its reference pages are generated from the code (the OpenAPI
document, the click commands, the settings models), `mkdocs build --strict` builds it, and the
offline link check finds every internal link and anchor of the built site, or names the broken one."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference() -> ModuleType:
    return _script("docs_reference")


def test_the_cli_reference_walks_the_commands(reference: ModuleType) -> None:
    text = reference.cli_markdown()
    assert "## visa db upgrade {#visa-db-upgrade}" in text
    assert "Bring the database schema to the current version." in text
    assert "## visa users set-posix {#visa-users-set-posix}" in text and "`--uid`" in text


def test_the_settings_reference_has_every_section_field_type_and_default(reference: ModuleType) -> None:
    text = reference.settings_markdown()
    row = next(line for line in text.splitlines() if line.startswith("| `scheduler.sync_seconds` "))
    assert "| int | `60` |" in row and "`VISA_SCHEDULER__SYNC_SECONDS`" in row
    assert "`oidc.server_url`" in text and "## posix {#section-posix}" in text
    assert "Where the embedded setup keeps its state" in text  # data_dir's description


def test_the_rest_reference_is_the_openapi_document(reference: ModuleType) -> None:
    document = reference.openapi_document()
    text = reference.rest_markdown(document)
    assert "### GET /api/openapi.json" in text
    assert "### POST /api/instances" in text
    assert "{#schema-errorout}" in text
    assert len([line for line in text.splitlines() if line.startswith("### ")]) > len(document["paths"])


def _build(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("reference"))
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "docs_reference.py"), str(tmp_path / "docs" / "reference")],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return tmp_path


def test_the_site_builds_strictly_and_its_links_resolve(tmp_path: Path) -> None:
    src = _build(tmp_path)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(src / "mkdocs.yml"),
            "-d",
            str(src / "site"),
        ],
        capture_output=True,
        text=True,
        cwd=src,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    for page in (
        "admin-guide.html",
        "operations.html",
        "security.html",
        "architecture.html",
        "reference/rest.html",
        "reference/cli.html",
        "reference/settings.html",
    ):
        assert (src / "site" / page).is_file(), page
    checker = _script("check_site_links")
    assert checker.check(src / "site") == []

    # The checker reports what is broken: a missing anchor, a missing page, a script from a CDN.
    page = src / "site" / "admin-guide.html"
    page.write_text(
        page.read_text().replace(
            "</body>",
            '<a href="reference/cli.html#visa-no-such-command">x</a><a href="gone.html">y</a>'
            '<script src="https://cdn.example.org/x.js"></script></body>',
        )
    )
    problems = "\n".join(checker.check(src / "site"))
    assert "no anchor #visa-no-such-command" in problems
    assert "gone.html -> no such file" in problems
    assert "cdn.example.org" in problems


def test_a_broken_link_in_a_page_fails_the_strict_build(tmp_path: Path) -> None:
    src = _build(tmp_path)
    with (src / "docs" / "admin-guide.md").open("a") as out:
        out.write("\nSee [nowhere](no-such-page.md).\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(src / "mkdocs.yml"),
            "-d",
            str(src / "site"),
        ],
        capture_output=True,
        text=True,
        cwd=src,
        timeout=120,
    )
    assert r.returncode != 0 and "no-such-page.md" in r.stdout + r.stderr
