"""A GPU flavour shown as unavailable on the create page once the OpenStack sandbox's GPUs are in
use: real headless Chromium, a real visa (uvicorn, SQLite) whose default cloud is the sandbox,
and its real Placement (the sandbox's host offers 4 ``CUSTOM_GPU_A40``; see
deploy/openstack-sandbox/README.md).

alice (staff, no instance quota) takes the GPUs with visa's own create call, one machine each,
until Placement has none left; the create page then shows the GPU size as not available and
it cannot be picked, while the CPU size still can; one more request is refused before Nova is
asked. Every server made here is deleted at the end. Screenshots: tests/artifacts/capacity/.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import ROOT, allow_errors, chromium, cli, require_chromium, served, visa_env
from tests.processes import free_port
from tests.sandbox_wait import delete_servers, placement_free, wait_scheduled, wait_until

pytestmark = pytest.mark.integration

ARTIFACTS = ROOT / "tests" / "artifacts" / "capacity"
GPU, CPU = "esrf.gpu.a40", "esrf.medium"
GPUS = 4  # what the sandbox's compute node offers


def _catalogue(root: Path) -> Path:
    """The repository's CPU and GPU sizes, on an image the sandbox has."""
    (root / "flavours").mkdir(parents=True)
    (root / "images").mkdir()
    for name in (GPU, CPU):
        (root / "flavours" / f"{name}.yaml").write_text((ROOT / "flavours" / f"{name}.yaml").read_text())
    (root / "images" / "desktop.yaml").write_text(
        "name: desktop\nenvironment: Desktop\nversion: \"sandbox\"\ncloud_image: visa-sandbox-image\n"
        "protocols:\n  - {protocol: VNC, port: 5901}\n"
        f"plans:\n  - {{flavour: {CPU}, preset: true}}\n  - {{flavour: {GPU}}}\n"
    )
    return root


@dataclass
class Site:
    url: str
    log: Path
    prefix: str
    credentials: dict[str, Any]
    uids: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, openstack_sandbox: dict[str, Any]) -> Iterator[Site]:
    # The session's sandbox (tests/clouds/conftest.py): started if need be, shared with the other
    # OpenStack tests, whose servers carry other name prefixes.
    require_chromium()
    credentials = openstack_sandbox
    subprocess.run([str(ROOT / "scripts" / "build-web.sh")], check=True, capture_output=True, timeout=300)
    tmp = tmp_path_factory.mktemp("visa-capacity")
    prefix = f"cap{uuid.uuid4().hex[:6]}-"
    cloud_config = tmp / "sandbox.json"
    cloud_config.write_text(json.dumps({**credentials, "name_prefix": prefix}))
    data = tmp / "var"
    port = free_port()
    env = visa_env(data, port, VISA_SECRET_KEY="capacity-browser-test-secret", VISA_SCHEDULER__ENABLED_IN_WEB="false",
                   VISA_DEFAULT_CLOUD="sandbox")
    cli(env, "init")
    cli(env, "clouds", "add", "sandbox", "--kind", "openstack", "--config", str(cloud_config))
    catalogue = _catalogue(tmp / "catalogue")
    cli(env, "catalogue", "apply", str(catalogue / "flavours"), str(catalogue / "images"))
    cli(env, "users", "add", "alice", "--full-name", "Alice Martin", "--password", "alice-password",
        "--role", "STAFF")
    cli(env, "users", "quota", "alice", "-1")
    cli(env, "users", "add", "ada", "--full-name", "Ada Admin", "--password", "ada-password", "--role", "ADMIN")
    log = data / "server.log"
    try:
        with served(env, port, log) as url:
            yield Site(url=url, log=log, prefix=prefix, credentials=credentials)
    finally:
        delete_servers(credentials, prefix)


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    with chromium() as b:
        yield b


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _room(api: httpx.Client) -> dict[str, Any]:
    r = api.get("/api/capacity", params={"flavour": GPU})
    assert r.status_code == 200, r.text
    return r.json()[0]


def _create_page(page: Any) -> Any:
    """The create page with the desktop chosen: its sizes, with whether each can be had now."""
    page.goto("/instances/new")
    page.check("#no-experiment")  # staff: a machine of no experiment
    page.click('#environments [data-image="desktop"]')
    page.locator(f'#flavours [data-plan]:has-text("{CPU}") [data-capacity]').wait_for()
    return page.locator(f'#flavours [data-plan]:has-text("{GPU}")')


def test_gpu_flavour_unavailable_when_the_sandbox_gpus_are_used_up(site: Site, browser: Any) -> None:
    ctx = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 1000})
    ctx.set_default_timeout(30_000)
    api = httpx.Client(base_url=site.url, timeout=60)
    r = api.post("/api/login", json={"username": "alice", "password": "alice-password"})
    assert r.status_code == 200, r.text
    api.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    assert ctx.request.post("/api/login", data={"username": "alice", "password": "alice-password"}).ok
    page = ctx.new_page()

    before = _room(api)
    assert before["cloud"] == "sandbox" and before["needs"].get("CUSTOM_GPU_A40") == 1, before
    if before["available"]:
        card = _create_page(page)
        assert card.locator('[data-capacity="available"]').count() == 1
        shot(page, "01-gpu-available")

    plan = next(p for p in api.get("/api/plans").json() if p["flavour"]["name"] == GPU)
    # Each GPU machine is a Placement allocation once Nova has scheduled it: one machine per GPU
    # (fewer if others sharing the sandbox hold some: visa then refuses the rest itself).
    for n in range(GPUS):
        r = api.post("/api/instances", json={"name": f"reconstruction {n + 1}", "plan_id": plan["id"]})
        if r.status_code != 201:
            assert "CUSTOM_GPU_A40" in r.json().get("message", ""), r.text
            break
        site.uids.append(r.json()["uid"])
        wait_scheduled(site.credentials, site.prefix, len(site.uids), site.log)
    # Nova allocates as it schedules; visa reads Placement at most every 15 s. The create page may
    # say "unavailable" sooner (visa's own machines count until their lifetimes end, as bookings
    # need), while the administrators' pool view shows Placement's figures: wait for both.
    admin_api = httpx.Client(base_url=site.url, timeout=60)
    assert admin_api.post("/api/login", json={"username": "ada", "password": "ada-password"}).status_code == 200
    wait_until(lambda: _room(api)["available"] is False and placement_free(admin_api, "sandbox", "CUSTOM_GPU_A40") == 0)
    admin_api.close()
    room = _room(api)
    assert room["available"] is False, (room, site.log.read_text()[-3000:])
    assert "CUSTOM_GPU_A40" in room["message"], room

    card = _create_page(page)
    note = card.locator('[data-capacity="unavailable"]')
    note.wait_for()
    assert "CUSTOM_GPU_A40" in note.inner_text()
    assert card.is_disabled() and "unavailable" in (card.get_attribute("class") or "")
    assert page.locator(f'#flavours [data-plan]:has-text("{CPU}") [data-capacity="available"]').count() == 1
    shot(page, "02-gpu-unavailable")

    # The administrators' view of the pool: Placement's figures, and who holds them.
    admin = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 900})
    assert admin.request.post("/api/login", data={"username": "ada", "password": "ada-password"}).ok
    pools = admin.new_page()
    pools.goto("/admin/gpus")
    pool = pools.get_by_test_id("pool-sandbox-CUSTOM_GPU_A40").inner_text()
    assert "0 free" in pool, pool
    users = pools.get_by_test_id("gpu-users-sandbox").inner_text()
    assert users.count("alice") == len(site.uids) and "reconstruction 1" in users, users
    shot(pools, "03-admin-gpu-pools")
    admin.close()

    # Refused before the cloud is asked, with a message that says why.
    allow_errors(r"status of 4\d\d")
    r = api.post("/api/instances", json={"name": "one too many", "plan_id": plan["id"]})
    assert 400 <= r.status_code < 500 and "CUSTOM_GPU_A40" in r.json()["message"], r.text
    for uid in site.uids:
        api.delete(f"/api/instances/{uid}")
    api.close()
    ctx.close()
