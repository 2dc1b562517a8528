"""Every page of visa, visited in a real Chromium by the people who see it: none reports a
console error or a Content-Security-Policy violation (inline styles included: the watch of
tests/browser.py fails the test), and axe-core finds no serious or critical WCAG 2.1 A/AA
violation on any. The create flow works with the keyboard alone, its focus always visible."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import Site, accessibility_problems, assert_accessible, chromium, cli, local_site

pytestmark = pytest.mark.integration

EXPERIMENTS = [
    {"id": "ev280-id21-1", "proposal": "ev280", "proposal_title": "Trace elements in Roman glass",
     "instrument": "id21", "start_date": "2026-11-20", "end_date": "2026-11-23", "title": "XRF mapping",
     "doi": "10.15151/ESRF-ES-280", "data_url": "https://data.example.org/ev280?x=<b>&y=1",
     "logbook_url": "https://logbook.example.org/ev280",
     "members": [{"username": "alice", "full_name": "Alice Martin"}]},
]


def _seed_instance(data_dir: Path) -> str:
    """A stopped instance of alice's with her experiment, written straight to the database (no
    machine behind it: its page is under test, not the machine)."""
    from sqlalchemy import select

    import visa.models  # noqa: F401
    from tests.admin.world import make_instance
    from visa.catalogue.models import Plan
    from visa.clock import system_clock
    from visa.clouds.models import Cloud
    from visa.db import Database
    from visa.experiments.models import Experiment
    from visa.instances.models import InstanceState
    from visa.users.models import User

    database = Database(f"sqlite:///{(data_dir / 'visa.db').resolve()}")
    with database.unit_of_work() as s:
        alice = s.scalar(select(User).where(User.username == "alice"))
        plan = s.scalar(select(Plan).where(Plan.preset.is_(True)))
        cloud = s.scalar(select(Cloud).where(Cloud.name == "local"))
        experiments = list(s.scalars(select(Experiment)))
        uid = make_instance(s, system_clock, alice, plan, cloud, name="glass-analysis", experiments=experiments,
                            state=InstanceState.STOPPED).uid
    database.dispose()
    return uid


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, str]]:
    data = tmp_path_factory.mktemp("visa-pages") / "var"

    def people(env: dict[str, str]) -> None:
        cli(env, "users", "add", "alice", "--full-name", "Alice Martin", "--password", "alice-password")
        cli(env, "users", "add", "ada", "--full-name", "Ada Admin", "--password", "ada-password", "--role", "ADMIN")

    # The facility's face, as its settings give it: its colours come as a stylesheet of their own.
    with local_site(data, "pages-test-secret", EXPERIMENTS, people=people, VISA_SITE__NAME="ESRF VISA",
                    VISA_SITE__BRAND_COLOUR="#0b3d6e", VISA_SITE__CONTACT_EMAIL="visa@esrf.example") as s:
        yield s, _seed_instance(data)


USER_PAGES = ["/", "/instances/new", "/instances/{uid}", "/bookings", "/help/", "/logout"]
ADMIN_PAGES = ["/admin/", "/admin/instances", "/admin/instances/{uid}", "/admin/extensions", "/admin/gpus",
               "/admin/catalogue", "/admin/users", "/admin/instruments", "/admin/notifications", "/admin/audit",
               "/api/docs"]


def _visit(ctx, paths: list[str], uid: str, problems: list[str]) -> None:
    page = ctx.new_page()
    for path in paths:
        r = page.goto(path.format(uid=uid))
        assert r is not None and r.ok, (path, r and r.status)
        page.wait_for_load_state("networkidle")
        if not path.startswith("/api/docs"):  # Swagger UI's own markup, as its npm package ships it
            problems.extend(accessibility_problems(page))
    page.close()


def test_every_page_is_clean(site: tuple[Site, str]) -> None:
    s, uid = site
    with chromium() as browser:
        anonymous = browser.new_context(base_url=s.url)
        problems: list[str] = []  # every page's, then the test fails naming them all
        _visit(anonymous, ["/login", "/help/", "/help/states", "/help/sharing"], uid, problems)
        page = anonymous.new_page()
        page.goto("/help/")
        assert page.title() == "Help · ESRF VISA"
        assert page.eval_on_selector(".topbar", "e => getComputedStyle(e).backgroundColor") == "rgb(11, 61, 110)"
        assert page.get_attribute("[data-testid=contact]", "href") == "mailto:visa@esrf.example"
        page.close()
        anonymous.close()
        for username, paths in (("alice", USER_PAGES), ("ada", ADMIN_PAGES)):
            ctx = browser.new_context(base_url=s.url, viewport={"width": 1280, "height": 860})
            page = ctx.new_page()
            page.goto("/login")
            page.fill("#username", username)
            page.fill("#password", f"{username}-password")
            page.click("#login-form button[type=submit]")
            page.wait_for_url(f"{s.url}/")
            page.close()
            _visit(ctx, paths, uid, problems)
            ctx.close()
    assert not problems, "accessibility:\n" + "\n".join(problems)


def test_the_data_is_linked_on_the_create_and_instance_pages(site: tuple[Site, str]) -> None:
    s, uid = site
    with chromium() as browser:
        ctx = browser.new_context(base_url=s.url)
        assert ctx.request.post("/api/login", data={"username": "alice", "password": "alice-password"}).ok
        page = ctx.new_page()
        for path, scope in (("/instances/new", "#experiment-list"), (f"/instances/{uid}", "#data")):
            page.goto(path)
            links = page.eval_on_selector_all(
                f"{scope} a", "els => els.map(a => [a.textContent.trim(), a.getAttribute('href'), a.rel])")
            assert links == [
                ["doi:10.15151/ESRF-ES-280", "https://doi.org/10.15151/ESRF-ES-280", "noopener noreferrer"],
                # The import's URL, whole: escaped in the page, not cut at its '<'.
                ["Data portal", "https://data.example.org/ev280?x=<b>&y=1", "noopener noreferrer"],
                ["Logbook", "https://logbook.example.org/ev280", "noopener noreferrer"],
            ], (path, links)
        ctx.close()


# What the keyboard may press: nothing else moves the focus or acts.
FOCUS = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  const s = getComputedStyle(e);
  const ring = (s.outlineStyle !== "none" && parseFloat(s.outlineWidth) > 0) || s.boxShadow !== "none";
  return {tag: e.tagName.toLowerCase(), id: e.id, text: (e.textContent || e.value || "").trim().slice(0, 40),
          visible: e.matches(":focus-visible") && ring};
}"""


def _tab_to(page, selector: str, limit: int = 80) -> None:
    """Tab until ``selector`` has the focus; every element the focus passes shows that it has it."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focus = page.evaluate(FOCUS)
        if focus is None:
            continue
        assert focus["visible"], f"focus not visible on {focus}"
        if page.evaluate("(s) => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{selector} not reached with Tab")


def test_the_create_flow_by_keyboard_alone(site: tuple[Site, str]) -> None:
    s, _uid = site
    with chromium() as browser:
        ctx = browser.new_context(base_url=s.url, viewport={"width": 1280, "height": 860})
        ctx.set_default_timeout(20_000)
        page = ctx.new_page()
        page.goto("/login")
        # The login form: the username field has the focus (autofocus), then Tab and Enter.
        page.keyboard.type("alice")
        _tab_to(page, "#password")
        page.keyboard.type("alice-password")
        page.keyboard.press("Enter")
        page.wait_for_url(f"{s.url}/")
        _tab_to(page, 'a[href="/instances/new"]')
        page.keyboard.press("Enter")
        page.wait_for_url(f"{s.url}/instances/new")
        _tab_to(page, "input[name=experiment]")
        if not page.is_checked("input[name=experiment]"):  # a member of one experiment finds it ticked
            page.keyboard.press("Space")
        assert page.is_checked("input[name=experiment]")
        _tab_to(page, "#environments button.choice")
        page.keyboard.press("Enter")
        assert page.get_attribute("#environments button.choice", "aria-pressed") == "true"
        _tab_to(page, "#flavours button.choice:not(.unavailable)")
        page.keyboard.press("Space")
        assert page.get_attribute("#flavours button.choice:not(.unavailable)", "aria-pressed") == "true"
        _tab_to(page, "#name")
        page.keyboard.press("Control+a")
        page.keyboard.type("keyboard-only")
        _tab_to(page, "#create")
        assert_accessible(page)
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r".*/instances/[0-9a-f]+$"))
        assert page.text_content("[data-testid=instance-name]") == "keyboard-only"
        ctx.close()
