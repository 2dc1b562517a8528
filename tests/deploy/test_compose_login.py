"""A browser logs into visa with the Compose file's settings (deploy/compose/compose.yaml, as
``docker-compose config`` gives them) against the real OIDC server (tests/oidc, Keycloak's URL
layout and, like Keycloak with KC_HOSTNAME, an issuer named by the browsers' host).

The identity provider has two addresses, as in Compose: browsers reach it by the front-channel
host the Compose file names (sso.localhost, which Chromium resolves to loopback), visa's
process by another (Compose's keycloak:8080, here 127.0.0.1). Only the ports, the database and
the one process that serves what nginx splits in Compose differ from the file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml

from tests.browser import allow_errors, chromium, require_chromium, served, visa_env
from tests.processes import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OIDC = ROOT / "tests" / "oidc"


def _compose_env() -> dict[str, str]:
    compose = shutil.which("docker-compose")
    if compose is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is required in CI (deploy/system-packages.txt)")
        pytest.skip("no docker-compose")
    env = {k: v for k, v in os.environ.items() if k != "VISA_OIDC_CLIENT_SECRET"}
    r = subprocess.run([compose, "-f", "compose.yaml", "config"], cwd=ROOT / "deploy/compose", capture_output=True,
                       text=True, timeout=120, env={**env, "VISA_SECRET_KEY": "s" * 40})  # fmt: skip
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)["services"]["web-1"]["environment"]


def _moved(url: str, port: int, host: str | None = None) -> str:
    """``url`` on this machine: the same host (or ``host``), another port."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{host or parts.hostname}:{port}"))


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (OIDC / "node_modules" / "oidc-provider").is_dir():
        if os.environ.get("CI"):
            pytest.fail("node or tests/oidc/node_modules missing: run scripts/setup.sh")
        pytest.skip("node or tests/oidc/node_modules missing")
    return node


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)  # the Compose stack's database
def test_a_browser_logs_in_with_the_compose_settings_and_two_provider_addresses(
    committed_db, tmp_path: Path
) -> None:
    require_chromium()
    node = _node()
    compose = _compose_env()
    front, back = urlsplit(compose["VISA_OIDC__BROWSER_URL"]), urlsplit(compose["VISA_OIDC__SERVER_URL"])
    assert front.hostname != back.hostname, "the Compose file gives the provider one address"
    assert front.hostname.endswith(".localhost"), front  # browsers outside Compose resolve it to this host
    realm = json.loads((ROOT / "deploy/keycloak/visa-realm.json").read_text())
    client = next(c for c in realm["clients"] if c["clientId"] == compose["VISA_OIDC__CLIENT_ID"])
    assert compose["VISA_OIDC__CLIENT_SECRET"] == client["secret"]  # the stack's default is the realm's

    port = free_port()
    base = _moved(compose["VISA_BASE_URL"], port)
    redirects = [
        _moved(u, port) for u in client["redirectUris"] if u.startswith(compose["VISA_BASE_URL"] + "/")
    ]
    assert redirects, (
        f"the realm refuses the Compose stack's callback {compose['VISA_BASE_URL']}/auth/callback"
    )
    env = {**os.environ, "OIDC_PORT": "0", "OIDC_REALM": compose["VISA_OIDC__REALM"], "OIDC_REDIRECTS": ",".join(redirects),
           "OIDC_POST_LOGOUT": f"{base}/login,{base}/login?logged_out=1", "OIDC_CLIENT_SECRET": client["secret"],
           "OIDC_FRONT_HOST": front.hostname}  # fmt: skip
    proc = subprocess.Popen([node, "server.js"], cwd=OIDC, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        issuer = None
        deadline = time.monotonic() + 20
        while issuer is None and time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if line.startswith("ready "):
                issuer = line.split()[1]
            elif not line and proc.poll() is not None:
                break
        assert issuer, "the OIDC server did not start"
        idp_port = urlsplit(issuer).port
        assert idp_port is not None and urlsplit(issuer).hostname == front.hostname

        settings = {k: v for k, v in compose.items() if k.startswith("VISA_OIDC__")}
        settings |= {
            "VISA_OIDC__SERVER_URL": _moved(compose["VISA_OIDC__SERVER_URL"], idp_port, host="127.0.0.1"),
            "VISA_OIDC__BROWSER_URL": _moved(compose["VISA_OIDC__BROWSER_URL"], idp_port),
            "VISA_BASE_URL": base, "VISA_USER_CONTENT_DOMAIN": f"instances.localhost:{port}",
            "VISA_DATABASE_URL": committed_db.url, "VISA_SECRET_KEY": "compose-login-secret-0123456789abcdef",
        }  # fmt: skip
        data = tmp_path / "data"
        venv_bin = Path(sys.executable).parent
        r = subprocess.run([str(venv_bin / "visa"), "init"], env=visa_env(data, port, **settings), capture_output=True,
                           text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        with served(visa_env(data, port, **settings), port, tmp_path / "visa.log"), chromium() as browser:
            # The test provider's pages have no icon (Chromium asks for one): not visa's.
            allow_errors(rf"{front.hostname}:{idp_port}/favicon\.ico")
            page = browser.new_page()
            page.set_default_timeout(30_000)
            seen: list[str] = []
            page.on("request", lambda req: seen.append(req.url))
            page.goto(f"{base}/login")
            page.click("#login-oidc")
            page.wait_for_selector("#kc-form-login")
            # The browser is on the provider's front-channel address, never on the back channel's.
            assert urlsplit(page.url).netloc == f"{front.hostname}:{idp_port}", page.url
            page.fill("#username", "alice")
            page.fill("#password", "alice-password")
            page.click("#kc-login")
            page.wait_for_url(f"{base}/")
            me = page.evaluate("fetch('/api/me').then(r => r.json())")
            assert me["username"] == "alice" and me["full_name"] == "Alice Liddell", me
            # Logging out goes through the provider's front channel too, and back to visa.
            page.click('[data-testid="logout"]')
            page.wait_for_url(f"{base}/login?logged_out=1")
            logout = [u for u in seen if urlsplit(u).path.endswith("/protocol/openid-connect/logout")]
            assert logout and all(urlsplit(u).hostname == front.hostname for u in logout), seen
            assert not [u for u in seen if urlsplit(u).hostname in (back.hostname, "127.0.0.1")], seen
            page.close()
        log = (tmp_path / "visa.log").read_text()
        assert "Traceback" not in log, log[-3000:]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
