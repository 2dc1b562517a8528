"""The front end's files hang together: every asset a template names has a source in web/src,
every module import resolves, and the pages need nothing from the internet."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "visa" / "templates"
SRC = ROOT / "web" / "src"
NOVNC = ROOT / "web" / "node_modules" / "@novnc" / "novnc"


def _templates() -> list[Path]:
    return [p for p in TEMPLATES.rglob("*.html") if "auth" not in p.parts]


def test_templates_name_only_assets_we_ship() -> None:
    named = {m for p in _templates() for m in re.findall(r"filename='([^']+)'", p.read_text())}
    assert {"css/visa.css", "js/app.js", "js/desktop.js"} <= named
    for name in named:
        if name.startswith("vendor/uplot/"):
            # build-web.sh copies uPlot's files from the npm package (pinned in web/package-lock.json).
            assert name.removeprefix("vendor/uplot/") in (ROOT / "scripts" / "build-web.sh").read_text(), name
            continue
        assert (SRC / name).is_file(), f"{name} is named by a template but not in web/src"


def test_no_page_needs_the_internet() -> None:
    for path in [*_templates(), *SRC.rglob("*.js"), *SRC.rglob("*.css")]:
        text = path.read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']https?://""", text), path
        assert not re.search(r"""(import|from)\s*["']https?://|url\(\s*["']?https?://""", text), path


def test_module_imports_resolve() -> None:
    for js in (SRC / "js").glob("*.js"):
        for spec in re.findall(r"""^\s*import\s[^'"]*["']([^"']+)["']""", js.read_text(), re.M):
            assert spec.startswith("./") or spec.startswith("../vendor/novnc/"), (js.name, spec)
            if spec.startswith("./"):
                assert (js.parent / spec).is_file(), (js.name, spec)
            elif NOVNC.exists():
                # build-web.sh copies noVNC's core to static/vendor/novnc/core.
                assert (NOVNC / spec.removeprefix("../vendor/novnc/")).is_file(), (js.name, spec)


def test_novnc_is_pinned_in_the_lock_file() -> None:
    pkg = json.loads((ROOT / "web" / "package.json").read_text())
    lock = json.loads((ROOT / "web" / "package-lock.json").read_text())
    wanted = pkg["dependencies"]["@novnc/novnc"]
    assert lock["packages"]["node_modules/@novnc/novnc"]["version"] == wanted
    if not NOVNC.exists():
        pytest.skip("web/node_modules not installed (scripts/build-web.sh installs it)")
    assert json.loads((NOVNC / "package.json").read_text())["version"] == wanted
