"""GPU bookings in Chromium on the OpenStack sandbox's real Placement (its compute node offers 4
``CUSTOM_GPU_A40``; deploy/openstack-sandbox/README.md), served by a real visa (uvicorn, SQLite).

alice (staff) holds two GPUs with running machines for a month; bob's booking of one for
tomorrow is accepted. carol asks on the bookings page for one from today to tomorrow, ada
accepts it on hers: tomorrow is full. dave's create page shows the GPU size as not available,
with the next free day (the day after tomorrow); his own booking for tomorrow is refused with a
4xx naming the day. carol creates her GPU machine in the wizard, where the size says it is booked
for her: it comes from her booking, ends with it, and its page names the booking and that end.
Every server made here is deleted at the end. Screenshots: tests/artifacts/bookings/.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.browser import ROOT, allow_errors, chromium, cli, logged_in, require_chromium, served, visa_env
from tests.clouds.conftest import openstack_sandbox  # noqa: F401 (the session's sandbox)
from tests.clouds.test_capacity_browser import CPU, GPU, _catalogue
from tests.processes import free_port
from tests.sandbox_wait import delete_servers, wait_scheduled

pytestmark = pytest.mark.integration

ARTIFACTS = ROOT / "tests" / "artifacts" / "bookings"
TODAY = datetime.now(UTC).date()
TOMORROW = TODAY + timedelta(days=1)


@dataclass
class Site:
    url: str
    log: Path
    prefix: str
    credentials: dict[str, Any]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, openstack_sandbox: dict[str, Any]) -> Iterator[Site]:  # noqa: F811
    require_chromium()
    subprocess.run([str(ROOT / "scripts" / "build-web.sh")], check=True, capture_output=True, timeout=300)
    tmp = tmp_path_factory.mktemp("visa-bookings")
    prefix = f"book{uuid.uuid4().hex[:6]}-"
    cloud_config = tmp / "sandbox.json"
    cloud_config.write_text(json.dumps({**openstack_sandbox, "name_prefix": prefix}))
    data, port = tmp / "var", free_port()
    env = visa_env(data, port, VISA_SECRET_KEY="bookings-browser-test-secret", VISA_SCHEDULER__ENABLED_IN_WEB="false",
                   VISA_DEFAULT_CLOUD="sandbox")
    cli(env, "init")
    cli(env, "clouds", "add", "sandbox", "--kind", "openstack", "--config", str(cloud_config))
    catalogue = _catalogue(tmp / "catalogue")
    cli(env, "catalogue", "apply", str(catalogue / "flavours"), str(catalogue / "images"))
    for name, role in (("alice", "STAFF"), ("ada", "ADMIN"), ("bob", None), ("carol", None), ("dave", None)):
        cli(env, "users", "add", name, "--full-name", name.title(), "--password", f"{name}-password",
            *(("--role", role) if role else ()))
    cli(env, "users", "quota", "alice", "-1")
    # A machine with experiment data on the facility's storage runs as its owner's unix identity.
    for uid, name in enumerate(("bob", "carol", "dave"), start=50001):
        cli(env, "users", "set-posix", name, "--uid", str(uid), "--gid", str(uid))
    beam = {"instrument": "id16a", "start_date": TODAY.isoformat(), "end_date": (TODAY + timedelta(days=3)).isoformat()}
    (tmp / "experiments.json").write_text(json.dumps({"experiments": [
        {"id": "ev900-id16a", "proposal": "ev900", "title": "Holotomography", "members": ["bob", "carol"], **beam},
        {"id": "ev901-id16a", "proposal": "ev901", "title": "Phase contrast", "members": ["dave"], **beam},
    ]}))
    cli(env, "experiments", "import", str(tmp / "experiments.json"))
    log = data / "server.log"
    try:
        with served(env, port, log) as url:
            yield Site(url=url, log=log, prefix=prefix, credentials=openstack_sandbox)
    finally:
        delete_servers(openstack_sandbox, prefix)


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _api(ctx: Any, method: str, path: str, **kw: Any) -> Any:
    csrf = ctx.request.get("/api/me").json().get("csrf_token", "")
    return ctx.request.fetch(path, method=method, headers={"X-CSRF-Token": csrf}, **kw)


def _gpu_card(page: Any) -> Any:
    page.goto("/instances/new")
    page.wait_for_function("() => document.querySelectorAll('[data-experiment] input:checked').length === 1")
    page.click('#environments [data-image="desktop"]')
    page.locator(f'#flavours [data-plan]:has-text("{CPU}") [data-capacity]').wait_for()
    return page.locator(f'#flavours [data-plan]:has-text("{GPU}")')


def test_book_accept_and_use_a_gpu_on_the_sandbox(site: Site) -> None:
    with chromium() as browser:
        alice, ada, bob, carol, dave = (logged_in(browser, site.url, n) for n in ("alice", "ada", "bob", "carol", "dave"))
        # Two GPUs held by alice's running machines (a month each: she is staff).
        plan = next(p for p in alice.request.get("/api/plans").json() if p["flavour"]["name"] == GPU)
        for n in range(2):
            r = _api(alice, "POST", "/api/instances", data={"name": f"reconstruction {n + 1}", "plan_id": plan["id"]})
            assert r.status == 201, r.text()
        wait_scheduled(site.credentials, site.prefix, 2, site.log)
        # bob's booking for tomorrow, accepted.
        bob_exp = bob.request.get("/api/experiments").json()[0]["id"]
        r = _api(bob, "POST", "/api/bookings", data={"flavour": GPU, "starts_on": TOMORROW.isoformat(),
                                                     "ends_on": TOMORROW.isoformat(), "experiment_id": bob_exp})
        assert r.status == 201, r.text()
        assert _api(ada, "POST", f"/api/bookings/{r.json()['id']}/accept", data={}).json()["state"] == "ACCEPTED"

        # carol asks on the bookings page, from today to tomorrow.
        page = carol.new_page()
        page.goto("/bookings")
        page.select_option('[data-testid="booking-flavour"]', GPU)
        page.fill('[data-testid="booking-from"]', TODAY.isoformat())
        page.fill('[data-testid="booking-to"]', TOMORROW.isoformat())
        page.fill('[data-testid="booking-comment"]', "holotomography reconstruction")
        page.click('[data-testid="booking-submit"]')
        state = page.locator('[data-testid^="my-booking-state-"]')
        state.wait_for()
        assert state.inner_text() == "PENDING"
        booking_id = int(state.get_attribute("data-testid").rsplit("-", 1)[1])
        shot(page, "01-asked")

        # ada accepts it on hers.
        admin = ada.new_page()
        admin.goto("/bookings")
        admin.get_by_test_id(f"accept-{booking_id}").click()
        admin.locator(f'[data-testid="booking-state-{booking_id}"]:has-text("ACCEPTED")').wait_for()
        shot(admin, "02-accepted")
        page.reload()
        assert page.get_by_test_id(f"my-booking-state-{booking_id}").inner_text() == "ACCEPTED"

        # Tomorrow is full: dave's week-long machine is not available, and the page says from when it is.
        dave_page = dave.new_page()
        card = _gpu_card(dave_page)
        note = card.locator('[data-capacity="unavailable"]')
        note.wait_for()
        day_after = (TODAY + timedelta(days=2)).isoformat()
        assert f"fully booked on {TOMORROW.isoformat()}" in note.inner_text(), note.inner_text()
        assert f"next free on {day_after}" in note.inner_text()
        assert card.is_disabled()
        shot(dave_page, "03-next-free")
        dave_exp = dave.request.get("/api/experiments").json()[0]["id"]
        allow_errors(r"status of 4\d\d")
        r = _api(dave, "POST", "/api/bookings", data={"flavour": GPU, "starts_on": TOMORROW.isoformat(),
                                                      "ends_on": TOMORROW.isoformat(), "experiment_id": dave_exp})
        assert r.status == 409 and r.json()["details"]["day"] == TOMORROW.isoformat(), r.text()
        assert f"fully booked on {TOMORROW.isoformat()}" in r.json()["message"]

        # carol's GPU comes from her booking, in the wizard, and ends with it.
        page.goto("/instances/new")
        card = _gpu_card(page)
        booked = card.locator('[data-capacity="available"]')
        booked.wait_for()
        assert f"Booked for you until {TOMORROW.isoformat()}" in booked.inner_text(), booked.inner_text()
        card.click()
        page.fill("#name", "tomography")
        page.click('[data-testid="create"]')
        page.wait_for_function("() => /\\/instances\\/[0-9a-f]+$/.test(location.pathname)"
                               " || !document.getElementById('form-error').classList.contains('hidden')")
        assert re.search(r"/instances/[0-9a-f]+$", page.url), page.locator("#form-error").inner_text()
        uid = page.url.rstrip("/").rsplit("/", 1)[1]
        end = datetime.combine(TOMORROW + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        shown = page.get_by_test_id("booking").inner_text()  # the booking it came from, and their one end
        assert f"booking {booking_id}, {TODAY.isoformat()} to {TOMORROW.isoformat()}" in shown, shown
        assert f"{end:%Y-%m-%d %H:%M} UTC" in shown, shown
        shot(page, "04-used")
        made = carol.request.get(f"/api/instances/{uid}").json()
        assert datetime.fromisoformat(made["terminates_at"]) == end, made
        assert carol.request.get(f"/api/bookings/{booking_id}").json()["instances"] == [uid]
        for ctx in (alice, ada, bob, carol, dave):
            ctx.close()
