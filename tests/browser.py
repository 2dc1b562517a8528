"""What the browser tests share: a real visa served by uvicorn, its CLI, and Debian's Chromium.

Chromium is the Debian package (never a browser downloaded by Playwright), started with the
flags a closed network needs. Every page it opens is watched: a console error, an uncaught
exception or a Content-Security-Policy violation fails the test that was running, or whose
fixtures were being set up (see ``tests/conftest.py``), unless the test said it expects that
very message (``allow_errors``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VISA = str(Path(sys.executable).with_name("visa"))


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright")


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    r = subprocess.run([VISA, *args], env=env, capture_output=True, text=True, timeout=120, input=stdin)
    assert r.returncode == 0, f"visa {' '.join(args)}: {r.stdout}{r.stderr}"
    return r.stdout


def visa_env(data_dir: Path, port: int, **settings: str) -> dict[str, str]:
    """This process's environment without its VISA_ settings, plus a fresh data dir and ``settings``."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("VISA_")},
        "VISA_DATA_DIR": str(data_dir),
        "VISA_BASE_URL": f"http://127.0.0.1:{port}",
        **settings,
    }


@contextmanager
def served(env: dict[str, str], port: int, log: Path) -> Iterator[str]:
    """visa as `visa run` serves it (uvicorn, the ASGI app), until the block ends; yields its URL."""
    argv = [sys.executable, "-m", "uvicorn", "visa.asgi:create_asgi_app", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--ws-per-message-deflate", "false"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "visa did not answer in 60 s:\n" + log.read_text()[-3000:]
            time.sleep(0.3)
        yield url
    finally:
        _stop(proc)


@dataclass
class Site:
    url: str
    data_dir: Path
    env: dict[str, str]
    log: Path


@contextmanager
def local_site(data: Path, secret: str, experiments: list[dict[str, Any]] | dict[str, Any], *, dirs: tuple[str, ...] = (),
               people: Callable[[dict[str, str]], None] | None = None, **settings: str) -> Iterator[Site]:
    """A visa of its own on the embedded default (data dir ``data``, the local cloud), served
    until the block ends: the web assets built, the shipped catalogue applied, ``experiments``
    imported (a list, or an export with its ``instruments``; after ``people``, given the environment
    to add users with the CLI), ``dirs`` made under the facility's storage (`visa init` points the
    local cloud's data mounts at <data dir>/facility). The scheduler's periodic jobs are not under
    test; moving instances are followed closely."""
    from tests.processes import delete_local_sessions, free_port

    require_chromium()
    subprocess.run([str(ROOT / "scripts" / "build-web.sh")], check=True, capture_output=True, timeout=300)
    port = free_port()
    env = visa_env(data, port, VISA_SECRET_KEY=secret, VISA_SCHEDULER__UNSTABLE_SYNC_SECONDS="1",
                   VISA_SCHEDULER__ENABLED_IN_WEB="false", **settings)
    cli(env, "init")
    cli(env, "catalogue", "apply", str(ROOT / "flavours"), str(ROOT / "images"))
    for d in dirs:
        (data / "facility" / d).mkdir(parents=True, exist_ok=True)
    if people is not None:
        people(env)
    listing = data.parent / "experiments.json"
    listing.write_text(json.dumps(experiments))
    cli(env, "experiments", "import", str(listing))
    log = data / "server.log"
    try:
        with served(env, port, log) as url:
            yield Site(url=url, data_dir=data, env=env, log=log)
    finally:
        delete_local_sessions(data)
        forget_local_accounts(env)


def api_client(url: str, username: str) -> httpx.Client:
    """A logged-in API client of ``username`` (password ``<username>-password``) that sends the
    CSRF header as the pages do."""
    client = httpx.Client(base_url=url, timeout=30)
    r = client.post("/api/login", json={"username": username, "password": f"{username}-password"})
    assert r.status_code == 200, r.text
    client.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return client


def session_logs(data: Path, tail: int = 1500) -> str:
    """The end of every local session's supervisor log under ``data``: why a session ended."""
    return "".join(f"\n--- {log}\n{log.read_text(errors='replace')[-tail:]}" for log in sorted(data.rglob("supervisor.log")))


def local_desktop(site: Site, client: httpx.Client, name: str, *, wait: bool = True) -> str:
    """A Desktop on esrf.medium on the client's first experiment, with its own home, on the local
    cloud; followed until ACTIVE if ``wait``: its uid. A machine that fails says why (its fault,
    visa's log, the session's supervisor log)."""
    experiments = client.get("/api/experiments").json()
    experiment = (experiments["items"] if isinstance(experiments, dict) else experiments)[0]["id"]
    plans = client.get("/api/plans", params={"experiment": experiment}).json()
    plan = next(p for p in plans if p["image"]["name"] == "desktop" and p["flavour"]["name"] == "esrf.medium")
    r = client.post("/api/instances", json={"name": name, "plan_id": plan["id"], "experiment_ids": [experiment],
                                             "own_home": True})
    assert r.status_code == 201, r.text
    uid = r.json()["uid"]
    deadline = time.monotonic() + 180
    while wait and (instance := client.get(f"/api/instances/{uid}").json())["state"] != "ACTIVE":
        failed = instance["state"] in ("ERROR", "DELETED")
        assert not failed and time.monotonic() < deadline, (
            f"{instance['state']}: {instance.get('error')}\n{site.log.read_text()[-3000:]}"
            f"{session_logs(site.data_dir)}"
        )
        time.sleep(0.5)
    return uid


def forget_local_accounts(env: dict[str, str]) -> None:
    """The host accounts the site recorded for its users go with it (a later site's database
    records none, and would find them in its way)."""
    from tests.clouds.accounts import remove_recorded_accounts
    from visa.db import Database
    from visa.settings import Settings

    url = Settings(data_dir=Path(env["VISA_DATA_DIR"]), database_url=env.get("VISA_DATABASE_URL")).sqlalchemy_url
    database = Database(url)
    try:
        remove_recorded_accounts(database)
    except Exception:  # a site that never got its schema recorded nothing
        pass
    finally:
        database.dispose()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


# What the pages said that the running test did not expect, and what it expects.
ERRORS: list[str] = []
_ALLOWED: list[re.Pattern[str]] = []
# Violations are reported by the page itself as well: not every one reaches the console.
_REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`);
}, true);
"""


def allow_errors(*patterns: str) -> None:
    """Messages (regular expressions) the running test provokes on purpose."""
    _ALLOWED.extend(re.compile(p) for p in patterns)


def _note(text: str) -> None:
    if not any(p.search(text) for p in _ALLOWED):
        ERRORS.append(text)


def _watch_page(page: Any) -> None:
    def console(message: Any) -> None:
        if message.type in ("error", "assert"):
            where = (message.location or {}).get("url", "")
            _note(f"console {message.type} on {page.url}: {message.text} ({where})")

    page.on("console", console)
    page.on("pageerror", lambda error: _note(f"uncaught error on {page.url}: {error}"))


def _watch_context(context: Any) -> Any:
    context.add_init_script(_REPORT_VIOLATIONS)
    context.on("page", _watch_page)
    return context


def begin_test() -> None:
    ERRORS.clear()
    _ALLOWED.clear()


def end_test() -> None:
    """Fails the running test if a page reported an error it did not expect."""
    found = list(ERRORS)
    begin_test()
    if found:
        pytest.fail("the browser reported errors:\n" + "\n".join(found), pytrace=False)


@contextmanager
def chromium() -> Iterator[Any]:
    """Chromium, whose every context and page is watched for errors."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        new_context = browser.new_context

        def watched_context(*args: Any, **kwargs: Any) -> Any:
            return _watch_context(new_context(*args, **kwargs))

        def watched_page(*args: Any, **kwargs: Any) -> Any:
            context = watched_context(*args, **kwargs)
            page = context.new_page()
            page.on("close", lambda _page: context.close())
            return page

        browser.new_context = watched_context
        browser.new_page = watched_page
        try:
            yield browser
        finally:
            browser.close()


# axe-core (tests/a11y/package.json, installed by scripts/setup.sh): WCAG 2.0 and 2.1, levels A and AA.
AXE = ROOT / "tests" / "a11y" / "node_modules" / "axe-core" / "axe.min.js"
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
_AXE_RUN = """async ([tags, exclude]) => {
  const result = await axe.run({exclude: exclude.map((s) => [s])}, {runOnly: {type: "tag", values: tags},
                                                                   resultTypes: ["violations"]});
  return result.violations.filter((v) => v.impact === "serious" || v.impact === "critical").map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(" ")}: ${n.failureSummary.replace(/\\s+/g, " ")}`),
  }));
}"""


def _axe_source() -> str:
    if not AXE.exists():
        subprocess.run(["npm", "ci", "--prefix", str(AXE.parents[2]), "--no-audit", "--no-fund", "--loglevel=error"],
                       check=True, capture_output=True, timeout=300)
    return AXE.read_text()


def accessibility_problems(page: Any, *, exclude: tuple[str, ...] = ()) -> list[str]:
    """axe-core's serious and critical violations of the WCAG 2.1 A and AA rules on the page as it
    is now, each naming the rule and its elements. axe is injected through the DevTools protocol,
    which the pages' Content-Security-Policy does not apply to (``exclude``: selectors of parts
    that are not visa's, e.g. a remote desktop's canvas)."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(_axe_source())
    found = page.evaluate(_AXE_RUN, [WCAG_AA, list(exclude)])
    return [f"{page.url}: {v['id']} ({v['impact']}): {v['help']}\n    " + "\n    ".join(v["nodes"]) for v in found]


def assert_accessible(page: Any, *, exclude: tuple[str, ...] = ()) -> None:
    """Fails the test on a serious or critical WCAG 2.1 A/AA violation (``accessibility_problems``)."""
    found = accessibility_problems(page, exclude=exclude)
    if found:
        pytest.fail("accessibility:\n" + "\n".join(found), pytrace=False)


def logged_in(browser: Any, url: str, username: str) -> Any:
    """A browser context of its own for ``username`` (password ``<username>-password``), logged in
    with visa's local login."""
    ctx = browser.new_context(base_url=url, viewport={"width": 1280, "height": 860})
    ctx.set_default_timeout(30_000)
    r = ctx.request.post("/api/login", data={"username": username, "password": f"{username}-password"})
    assert r.ok, r.text()
    return ctx
