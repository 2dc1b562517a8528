"""Chromium logs into visa (served as `visa run` serves it) at the real OIDC server, in both of its
layouts: Keycloak's, configured by ``server_url`` and ``realm``, and a plain issuer with
entitlement claims, configured by ``issuer`` alone. The provider's roles reach the session, and
logging out goes through the provider's end-session page and back. Any console error or
Content-Security-Policy violation on the way fails the test (tests/browser.py)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.auth.test_oidc import running_idp
from tests.browser import allow_errors, chromium, cli, require_chromium, served, visa_env
from tests.processes import free_port

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)  # several processes share it
@pytest.mark.parametrize("layout", ["keycloak", "plain"])
def test_a_browser_logs_in_with_the_providers_roles_and_out_again(layout: str, committed_db, tmp_path: Path) -> None:
    require_chromium()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running_idp(layout, OIDC_REDIRECTS=f"{base}/auth/callback",
                     OIDC_POST_LOGOUT=f"{base}/login?logged_out=1") as idp:
        provider = {k: v for k, v in idp.provider_settings().items() if k != "role_mapping"}
        settings = {f"VISA_OIDC__{k.upper()}": str(v) for k, v in provider.items()}
        settings |= {
            "VISA_OIDC__ROLE_MAPPING": json.dumps(idp.provider_settings()["role_mapping"]),
            "VISA_OIDC__CLIENT_SECRET": "visa-secret", "VISA_DATABASE_URL": committed_db.url,
            "VISA_SECRET_KEY": "oidc-browser-secret-0123456789abcdef",
            "VISA_USER_CONTENT_DOMAIN": f"instances.localhost:{port}",
        }
        env = visa_env(tmp_path / "data", port, **settings)
        cli(env, "init")
        checked = cli(env, "check-config")
        assert f"ok      oidc discovery: {idp.issuer.rstrip('/')}" in checked, checked
        with served(env, port, tmp_path / "visa.log"), chromium() as browser:
            # The test provider's pages have no icon (Chromium asks for one): not visa's.
            allow_errors(rf"127\.0\.0\.1:{urlsplit(idp.base).port}/favicon\.ico")
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{base}/login")
            page.click("#login-oidc")
            page.wait_for_selector("#kc-form-login")
            assert page.url.startswith(idp.issuer.rstrip("/") + "/"), page.url  # the provider's own login page
            page.fill("#username", "sam")
            page.fill("#password", "sam-password")
            page.click("#kc-login")
            page.wait_for_url(f"{base}/")
            me = page.evaluate("fetch('/api/me').then(r => r.json())")
            # sam's realm role visa-admin, or entitlement ...:visa-admin:role=member#..., maps to ADMIN
            assert (me.get("username"), me.get("roles")) == ("sam", ["ADMIN"]), me
            page.goto(f"{base}/admin")
            assert urlsplit(page.url).path.rstrip("/") == "/admin" and page.locator("h1").first.is_visible()
            page.click('[data-testid="logout"]')
            page.wait_for_url(f"{base}/login?logged_out=1")
            assert page.request.get(f"{base}/api/me").status == 401  # the browser's cookie opens nothing now
            page.close()
    log = (tmp_path / "visa.log").read_text()
    assert "Traceback" not in log, log[-3000:]
