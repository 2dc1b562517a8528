"""Content-Security-Policy in a real Chromium: a page of visa's reaches visa's own websocket
origin and event stream, and nothing else (a script that got in cannot send what it read to a
websocket server of its choosing)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.browser import Site, allow_errors, chromium, cli, local_site
from tests.processes import free_port

pytestmark = pytest.mark.integration

PROBE = """async ([url]) => {
  const seen = [];
  const listener = (e) => seen.push(e.blockedURI);
  document.addEventListener("securitypolicyviolation", listener);
  let thrown = null;
  const closed = new Promise((resolve) => {
    try {
      const ws = new WebSocket(url);
      ws.onclose = () => resolve("closed");
      ws.onerror = () => resolve("error");
    } catch (e) {
      thrown = String(e);
      resolve("thrown");
    }
  });
  await Promise.race([closed, new Promise((r) => setTimeout(r, 5000))]);
  await new Promise((r) => setTimeout(r, 200));  // violation events are dispatched asynchronously
  document.removeEventListener("securitypolicyviolation", listener);
  return {violations: seen, thrown};
}"""

EVENTS_OPEN = """() => new Promise((resolve) => {
  const source = new EventSource("/api/events");
  source.onopen = () => { source.close(); resolve(true); };
  setTimeout(() => resolve(false), 10000);
})"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = tmp_path_factory.mktemp("visa-csp") / "var"

    def people(env: dict[str, str]) -> None:
        cli(env, "users", "add", "alice", "--full-name", "Alice Martin", "--password", "alice-password")

    with local_site(data, "csp-test-secret", [], people=people) as s:
        yield s


def test_websockets_reach_visa_only(site: Site) -> None:
    with chromium() as browser:
        page = browser.new_page(base_url=site.url)
        page.set_default_timeout(20_000)
        page.goto("/login")
        page.fill("#username", "alice")
        page.fill("#password", "alice-password")
        page.click("#login-form button[type=submit]")
        page.wait_for_url(f"{site.url}/")
        assert page.evaluate(EVENTS_OPEN) is True  # the live updates' stream

        elsewhere = f"ws://127.0.0.1:{free_port()}/exfiltrate"
        allow_errors(f"(Refused to connect to|Connecting to) '{re.escape(elsewhere)}'",
                     f"CSP violation: connect-src blocked {re.escape(elsewhere)}")
        blocked = page.evaluate(PROBE, [elsewhere])
        assert blocked["violations"] == [elsewhere] or blocked["thrown"], blocked

        # visa's own relay: the browser lets it through (the relay then refuses the bad token).
        own = site.url.replace("http://", "ws://") + "/ws/desktop/nope?token=nope"
        allow_errors("WebSocket connection to '" + re.escape(own))
        reached = page.evaluate(PROBE, [own])
        assert reached == {"violations": [], "thrown": None}, reached
