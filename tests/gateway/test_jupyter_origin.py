"""The attack a member with a shell in an instance can try on its owner, in a real Chromium:
a page planted in the instance's own Jupyter server, opened by the owner through visa, tries
to read visa's pages and CSRF token and to mint an API token with the owner's credentials."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from sqlalchemy import func, select

from tests.browser import allow_errors, chromium, require_chromium
from tests.gateway.conftest import PASSWORD, UID, Jupyter, Live, World, make_world
from visa.users.models import ApiToken

pytestmark = [pytest.mark.timeout(180), pytest.mark.integration]


@pytest.fixture
def world(live: Live, jupyter: Jupyter) -> World:
    require_chromium()
    return make_world(live.db, live.clock, jupyter_port=jupyter.port)


def test_a_planted_page_cannot_reach_visa_with_the_owners_browser(live: Live, world: World) -> None:
    with chromium() as browser:
        page = browser.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{live.base}/login")
        page.fill("#username", "owner")
        page.fill("#password", PASSWORD)
        page.click("#login-form button[type=submit]")
        page.wait_for_url(f"{live.base}/")

        # The browser refuses the planted page's reads of visa: it says so in the console.
        allow_errors(r"CORS policy", r"Failed to load resource", r"net::ERR_FAILED")
        page.goto(f"{live.base}/jupyter/{UID}/static/attack.html#{quote(live.base, safe='')}")
        page.wait_for_function("() => window.__attack !== undefined")
        report = page.evaluate("window.__attack")

    assert report["ran"] is True  # the attack did run, in the owner's browser
    with live.db.unit_of_work() as s:
        assert s.scalar(select(func.count()).select_from(ApiToken)) == 0, report
    assert not report["tokens"].startswith("201"), report
    assert report["page"].startswith("blocked"), report  # visa's page (and its CSRF token) unreadable
    assert report["me"].startswith("blocked"), report
    assert report["parent"] == "no parent" and report["opener"] == "no opener", report
    assert report["origin"] == f"http://{live.content()}", report  # the instance's own origin
