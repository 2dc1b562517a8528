"""The wheel as a site installs it: ``python -m build`` in a clean checkout (no visa/static, no
node_modules: the build hook in setup.py builds the front-end assets with npm, the sdist carries
them, the wheel is built from the sdist), installed into a fresh virtualenv outside the tree,
``visa demo`` run from it, and Chromium loads its pages with no failed request and no console
error. The server's install does not pull JupyterLab (the ``local`` extra's)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement

from tests.browser import chromium, require_chromium
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_jupyterlab_is_the_local_extra_and_not_the_servers() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # What only the local cloud's sessions run (JupyterLab, the desktop's video encoder) stays
    # out of the server's own dependencies.
    local = {Requirement(r).name for r in project["optional-dependencies"]["local"]}
    assert "jupyterlab" in local and "av" in local
    assert not [r for r in project["dependencies"] if Requirement(r).name in local]


def _clean_checkout(dest: Path) -> None:
    """The files git would check out (tracked, plus new ones not ignored), without what a
    working tree builds or links in (visa/static, node_modules)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        src = ROOT / name
        if "node_modules" in Path(name).parts or name.startswith("visa/static") or not src.is_file():
            continue
        if src.is_symlink() and not (ROOT / name).resolve().is_relative_to(ROOT):
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name)


def _run(argv: list[str], **kwargs: object) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert r.returncode == 0, f"{' '.join(map(str, argv))}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.mark.integration
def test_a_wheel_built_from_a_clean_checkout_serves_its_pages(tmp_path: Path) -> None:
    require_chromium()
    if shutil.which("npm") is None:
        if os.environ.get("CI"):
            pytest.fail("npm is required in CI (deploy/system-packages.txt: nodejs)")
        pytest.skip("no npm")
    src, dist, venv, data = tmp_path / "src", tmp_path / "dist", tmp_path / "venv", tmp_path / "data"
    _clean_checkout(src)
    assert not (src / "visa/static").exists() and not (src / "web/node_modules").exists()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("VISA_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(src)], env=env, timeout=900)
    (wheel,) = dist.glob("visa-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for asset in ("visa/static/js/app.js", "visa/static/css/visa.css", "visa/static/vendor/novnc/core/rfb.js",
                  "visa/static/vendor/uplot/uPlot.esm.js", "visa/static/admin/admin.js",
                  "visa/demo_data/experiments.json"):  # fmt: skip
        assert asset in names, f"the wheel has no {asset}"
    jupyter = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: jupyterlab")]
    assert jupyter and all('extra == "local"' in line for line in jupyter), jupyter

    # A fresh virtualenv outside the tree; pip's cache serves what it downloaded before.
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    _run([str(venv / "bin/pip"), "install", "-q", str(wheel)], env=env, timeout=900)
    probe = "import importlib.util as u, sys; sys.exit(u.find_spec('jupyterlab') is not None)"
    _run([str(venv / "bin/python"), "-c", probe], env=env, cwd=tmp_path, timeout=60)  # the server's install

    port = free_port()
    run_env = {**env, "VISA_DATA_DIR": str(data), "VISA_SECRET_KEY": "wheel-test-secret-0123456789abcdef",
               "VISA_BASE_URL": f"http://127.0.0.1:{port}", "VISA_SCHEDULER__ENABLED_IN_WEB": "false"}  # fmt: skip
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(venv / "bin/visa"), "demo", "--port", str(port)], cwd=tmp_path, env=run_env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    failed: list[str] = []
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("visa demo did not answer:\n" + log.read_text()[-3000:])
        assert "site-packages" in _run([str(venv / "bin/python"), "-c", "import visa; print(visa.__file__)"],
                                       env=env, cwd=tmp_path)  # fmt: skip

        loaded: dict[str, int] = {}
        with chromium() as browser:
            page = browser.new_page()
            page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))

            def response(r) -> None:
                loaded[r.url] = r.status
                if r.status >= 400:
                    failed.append(f"{r.url}: HTTP {r.status}")

            page.on("response", response)
            page.set_default_timeout(30_000)
            page.goto(f"{url}/")
            assert "/login" in page.url  # anonymous: sent to log in, and back
            page.wait_for_load_state("networkidle")
            page.fill("#username", "scientist")
            page.fill("#password", "scientist-password")
            page.click("#login-form button[type=submit]")
            page.wait_for_url(f"{url}/")
            page.wait_for_load_state("networkidle")
            # The stylesheet applies: the page is not the browser's unstyled default.
            assert page.evaluate("getComputedStyle(document.body).fontFamily") not in (
                "",
                '"Times New Roman"',
                "serif",
            )
            page.close()
        assert not failed, failed
        statics = {u: s for u, s in loaded.items() if "/static/" in u}
        assert any(u.endswith(".css") for u in statics) and any(u.endswith(".js") for u in statics), loaded
        assert set(statics.values()) <= {200, 304}, statics
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(5)
        from tests.processes import delete_local_sessions

        delete_local_sessions(data)
