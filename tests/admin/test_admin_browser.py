"""The admin pages in a real headless Chromium against a real visa (uvicorn, SQLite, local cloud).

An admin creates a flavour limited to a role and a plan on it; a user gets the plan once
given the role (GET /api/plans as that user); the admin reboots an instance, moves its
termination date and deletes it, and finds it all in the audit log.
The dashboard's usage charts draw the usage job's samples.
Screenshots: tests/artifacts/admin/.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.browser import ROOT, allow_errors, chromium, cli, require_chromium, served, visa_env
from tests.processes import free_port

pytestmark = pytest.mark.integration

ARTIFACTS = ROOT / "tests" / "artifacts" / "admin"


def _seed_instance(data_dir: Path) -> str:
    """An ACTIVE instance of alice's, written straight to the database (no machine behind it)."""
    from sqlalchemy import select

    import visa.models  # noqa: F401
    from tests.admin.world import make_instance
    from visa.catalogue.models import Plan
    from visa.clock import system_clock
    from visa.clouds.models import Cloud
    from visa.db import Database
    from visa.users.models import User

    database = Database(f"sqlite:///{(data_dir / 'visa.db').resolve()}")
    with database.unit_of_work() as s:
        alice = s.scalar(select(User).where(User.username == "alice"))
        plan = s.scalar(select(Plan).where(Plan.preset.is_(True)))
        cloud = s.scalar(select(Cloud).where(Cloud.name == "local"))
        uid = make_instance(s, system_clock, alice, plan, cloud, name="alice-analysis").uid
    database.dispose()
    return uid


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    require_chromium()
    subprocess.run([str(ROOT / "scripts" / "build-apidocs.sh")], check=True, capture_output=True, timeout=300)
    if (ROOT / "scripts" / "build-web.sh").exists():
        subprocess.run([str(ROOT / "scripts" / "build-web.sh")], check=True, capture_output=True, timeout=300)
    data = tmp_path_factory.mktemp("visa-admin") / "var"
    port = free_port()
    env = visa_env(data, port, VISA_SECRET_KEY="admin-browser-test-secret", VISA_SCHEDULER__ENABLED_IN_WEB="false")
    cli(env, "init")
    cli(env, "catalogue", "apply", str(ROOT / "flavours"), str(ROOT / "images"))
    cli(env, "users", "add", "ada", "--full-name", "Ada Admin", "--password", "ada-password", "--role", "ADMIN")
    cli(env, "users", "add", "alice", "--full-name", "Alice Martin", "--password", "alice-password")
    cli(env, "users", "add", "bob", "--full-name", "Bob Leroy", "--password", "bob-password")
    uid = _seed_instance(data)
    with served(env, port, data / "server.log") as url:
        yield url, uid, data


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def _context(browser, url: str, username: str):
    ctx = browser.new_context(base_url=url, viewport={"width": 1400, "height": 1000})
    r = ctx.request.post("/api/login", data={"username": username, "password": f"{username}-password"})
    assert r.ok, r.text()
    return ctx


def _plans(ctx) -> list[str]:
    r = ctx.request.get("/api/plans")
    assert r.ok, r.text()
    return [f"{p['image']['name']}/{p['flavour']['name']}" for p in r.json()]


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_flavour_limited_to_a_role_reaches_the_user(site, browser) -> None:
    url, _, _ = site
    admin, alice = _context(browser, url, "ada"), _context(browser, url, "alice")
    page = admin.new_page()
    page.goto("/admin/")
    assert page.get_by_test_id("total-instances").inner_text() == "1"
    _shot(page, "dashboard")

    page.goto("/admin/catalogue")
    form = page.get_by_test_id("new-flavour")
    form.locator("input[name=name]").fill("esrf.test.big")
    form.locator("input[name=cores]").fill("8")
    form.locator("input[name=memory_gb]").fill("16")
    form.locator("input[name=cloud_flavour]").fill("m1.big")
    form.locator("input[name='limits.roles'][value=STAFF]").check()
    form.locator("input[name=lifetime_hours]").fill("72")
    form.get_by_role("button", name="Create flavour").click()
    page.wait_for_selector("tr[data-flavour='esrf.test.big']")
    row = page.locator("tr[data-flavour='esrf.test.big']")
    assert "8 cores, 16.0 GB" in row.inner_text() and "everyone: 72 h" in row.inner_text()
    assert row.locator("input[value=STAFF]").is_checked()

    plan = page.get_by_test_id("new-plan")
    plan.locator("select[name=image]").select_option("desktop")
    plan.locator("select[name=flavour]").select_option("esrf.test.big")
    plan.get_by_role("button", name="Create plan").click()
    page.wait_for_selector("tr[data-plan='desktop/esrf.test.big']")
    _shot(page, "catalogue")
    # A bad entry is refused with the field named, as a bad file would be (Chromium notes the 400).
    allow_errors(r"status of 400 \(Bad Request\) \(http://[^)]+/api/admin/flavours\)$")
    form = page.get_by_test_id("new-flavour")
    form.locator("input[name=name]").fill("esrf.broken")
    form.locator("input[name=cores]").fill("2")
    form.locator("input[name=memory_gb]").fill("4")
    form.locator("input[name=cloud_flavour]").fill("m1.small")
    form.locator("select[name=cloud]").evaluate("s => { s.add(new Option('nowhere', 'nowhere')); s.value = 'nowhere'; }")
    form.get_by_role("button", name="Create flavour").click()
    page.wait_for_selector("[data-testid=new-flavour] .form-error:has-text('cloud')")

    assert "desktop/esrf.test.big" not in _plans(alice)  # alice is not STAFF
    page.goto("/admin/users?q=alice")
    row = page.locator("tr[data-user=alice]")
    row.locator("select[name=role]").select_option("STAFF")
    row.get_by_role("button", name="Grant").click()
    page.wait_for_selector("tr[data-user=alice] .chip:has-text('STAFF')")
    _shot(page, "users")
    alice_plans = _plans(alice)
    assert "desktop/esrf.test.big" in alice_plans
    plans = alice.request.get("/api/plans").json()
    assert next(p for p in plans if p["flavour"]["name"] == "esrf.test.big")["max_lifetime_hours"] >= 72

    # Limits changed on the page: open to all.
    page.goto("/admin/catalogue")
    row = page.locator("tr[data-flavour='esrf.test.big']")
    row.locator("input[value=STAFF]").uncheck()
    page.get_by_test_id("save-limits-esrf.test.big").click()
    page.wait_for_selector(".admin-message:has-text('Saved')")
    assert not page.locator("tr[data-flavour='esrf.test.big'] input[value=STAFF]").is_checked()


def test_admin_acts_on_an_instance(site, browser) -> None:
    url, uid, _ = site
    admin = _context(browser, url, "ada")
    page = admin.new_page()
    page.on("dialog", lambda d: d.accept())
    page.goto("/admin/instances?owner=alice")
    page.get_by_role("link", name="alice-analysis").click()
    page.wait_for_url(f"**/admin/instances/{uid}")
    assert page.get_by_test_id("state").inner_text() == "ACTIVE"
    assert "#cloud-config" in page.get_by_test_id("userdata").inner_text()
    assert "alice" in page.get_by_test_id("members").inner_text()
    _shot(page, "instance")

    page.get_by_test_id("action-reboot").click()
    page.wait_for_selector("[data-testid=commands] td:has-text('REBOOT')")
    assert "ada" in page.get_by_test_id("commands").inner_text()

    from datetime import UTC, datetime

    new = (datetime.now(UTC) + timedelta(days=20)).replace(second=0, microsecond=0)
    page.locator("input[name=terminates_at]").fill(new.strftime("%Y-%m-%dT%H:%M"))
    page.locator("input[name=reason]").fill("beamtime moved")
    page.get_by_test_id("set-termination").click()
    page.wait_for_selector(f"[data-testid=terminates-at]:has-text('{new.strftime('%Y-%m-%d %H:%M')}')")

    # This instance only: members other than alice wait for her to be connected.
    page.get_by_test_id("member-access").select_option("owner_required")
    page.get_by_test_id("set-member-access").click()
    page.wait_for_selector("text=now: only with the owner")
    assert page.get_by_test_id("member-access").input_value() == "owner_required"
    assert admin.request.get(f"/api/admin/instances/{uid}").json()["members_need_owner"] is True

    page.get_by_test_id("action-delete").click()
    page.wait_for_selector("[data-testid=commands] td:has-text('DELETE')")
    _shot(page, "instance-after")
    state = admin.request.get(f"/api/admin/instances/{uid}").json()["state"]
    assert state in ("DELETING", "DELETED")

    page.goto(f"/admin/audit?target_id={uid}")
    text = page.get_by_test_id("audit").inner_text()
    for action in ("instance.reboot", "instance.termination", "instance.member_access", "instance.delete"):
        assert action in text, action
    assert "beamtime moved" in text
    _shot(page, "audit")


def test_admin_logs_a_user_out_and_deactivates_them(site, browser) -> None:
    url, _, _ = site
    admin, bob = _context(browser, url, "ada"), _context(browser, url, "bob")
    assert bob.request.get("/api/me").ok
    page = admin.new_page()
    page.on("dialog", lambda d: d.accept())
    page.goto("/admin/users?q=bob")
    row = page.locator("tr[data-user=bob]")
    row.get_by_role("button", name="Log out everywhere").click()
    page.wait_for_selector(".admin-message:has-text('Done')")
    assert bob.request.get("/api/me").status == 401  # the session ended on the server

    bob = _context(browser, url, "bob")
    page.locator("tr[data-user=bob]").get_by_role("button", name="Deactivate").click()
    page.locator("tr[data-user=bob]").get_by_role("button", name="Activate", exact=True).wait_for()
    assert "inactive" in page.locator("tr[data-user=bob]").inner_text()
    _shot(page, "users-deactivated")
    assert bob.request.get("/api/me").status == 401
    r = bob.request.post("/api/login", data={"username": "bob", "password": "bob-password"})
    assert not r.ok

    page.locator("tr[data-user=bob]").get_by_role("button", name="Activate", exact=True).click()
    page.locator("tr[data-user=bob]").get_by_role("button", name="Deactivate", exact=True).wait_for()
    assert _context(browser, url, "bob").request.get("/api/me").ok


# Pixels of a colour (not the greys of axes, grid, labels and the "all" line): the series drawn.
COLOURED_PIXELS = """el => {
  const c = el.querySelector('canvas');
  if (!c || !c.width) return -1;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] > 128 && Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 60) n++;
  }
  return n;
}"""


def _sample_usage(data_dir: Path) -> None:
    """Six hours of the usage job's samples, every 20 minutes, of bob's two machines on the local cloud."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    import visa.models  # noqa: F401
    from tests.admin.world import make_instance
    from visa.catalogue.models import Flavour, Plan
    from visa.clock import FrozenClock, system_clock
    from visa.clouds.models import Cloud
    from visa.db import Database
    from visa.usage.service import take_sample
    from visa.users.models import User

    database = Database(f"sqlite:///{(data_dir / 'visa.db').resolve()}")
    with database.unit_of_work() as s:
        bob = s.scalar(select(User).where(User.username == "bob"))
        plan = s.scalar(select(Plan).join(Flavour, Flavour.id == Plan.flavour_id).where(Flavour.name == "esrf.large"))
        cloud = s.scalar(select(Cloud).where(Cloud.name == "local"))
        for name in ("bob-tomo", "bob-fit"):
            make_instance(s, system_clock, bob, plan, cloud, name=name)
        now = datetime.now(UTC)
        for k in range(18, 0, -1):
            take_sample(s, FrozenClock(now - timedelta(minutes=20 * k)))
    database.dispose()


def test_dashboard_charts_draw_from_samples(site, browser) -> None:
    url, _, data = site
    _sample_usage(data)
    page = _context(browser, url, "ada").new_page()
    page.goto("/admin/")
    charts = page.locator("#usage-charts[data-drawn=day] .usage-chart")
    charts.first.wait_for()
    assert "18 points over the last day" in page.get_by_test_id("usage-status").inner_text()
    for key in ("instances", "cores", "memory_mb"):
        chart = page.locator(f".usage-chart[data-chart={key}]")
        assert int(chart.get_attribute("data-points") or 0) == 18
        assert int(chart.get_attribute("data-series") or 0) >= 2  # all, and esrf.large
        assert chart.evaluate(COLOURED_PIXELS) > 100, key
    _shot(page, "dashboard-usage")
    page.get_by_role("button", name="Week").click()
    page.locator("#usage-charts[data-drawn=week] .usage-chart[data-chart=cores]").wait_for()
    # Six hours of a week: a short stretch of line at the right end.
    assert page.locator(".usage-chart[data-chart=cores]").evaluate(COLOURED_PIXELS) > 10


def test_usage_report_draws_its_chart_and_exports_csv(site, browser) -> None:
    url, _, _ = site
    page = _context(browser, url, "ada").new_page()
    page.goto("/admin/usage?by=owner")
    # alice's machine has held its flavour for an hour (bob's two too, once the dashboard's test ran).
    chart = page.locator("#usage-report-charts[data-drawn=true] .usage-chart[data-chart=core_hours]")
    chart.wait_for()
    assert int(chart.get_attribute("data-bars") or 0) >= 1
    assert chart.evaluate(COLOURED_PIXELS) > 100
    table = page.get_by_test_id("usage-report")
    assert "alice" in table.inner_text()
    _shot(page, "usage-report")
    href = page.get_by_test_id("usage-csv").get_attribute("href")
    assert href and "by=owner" in href
    answer = page.context.request.get(href)
    assert answer.ok and answer.headers["content-type"].startswith("text/csv")
    assert answer.text().splitlines()[0] == "owner,instances,hours,core_hours,memory_gb_hours,gpu_hours"
    # A period that ends before it begins: the page names the field, the chart is not drawn.
    allow_errors(r"status of 400")
    response = page.goto("/admin/usage?from=2026-02-01&to=2026-01-01")
    assert response is not None and response.status == 400
    assert "from (2026-02-01" in page.get_by_test_id("usage-error").inner_text()
