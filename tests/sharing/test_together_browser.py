"""Working together on one machine, in real headless Chromium against a real visa (uvicorn, the
local cloud with a real desktop, SQLite in a fresh data dir, a real SMTP server on loopback).

Each person is a browser context of their own: alice owns the machine, bob is a member, carol
is invited by a link, sam is IT support, ada administers. Presence appears and disappears,
the owner-presence rule keeps bob out and then lets him in, an invitation link is redeemed after
logging in, a support request is prompted live on alice's page, accepted and connected, and an
extension is requested, accepted on /admin/extensions, with both emails received.
Screenshots: tests/artifacts/together/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.browser import (
    ROOT,
    Site,
    allow_errors,
    api_client,
    chromium,
    cli,
    local_desktop,
    local_site,
    logged_in,
)
from tests.processes import free_port
from tests.services import Inbox

pytestmark = pytest.mark.integration

ARTIFACTS = ROOT / "tests" / "artifacts" / "together"
PEOPLE = {
    "alice": ("Alice Martin", ()), "bob": ("Bob Durand", ()), "carol": ("Carol Petit", ()),
    "sam": ("Sam Support", ("IT_SUPPORT",)), "ada": ("Ada Admin", ("ADMIN",)),
}


@dataclass
class Together(Site):
    inbox: Inbox
    uid: str  # alice's machine, running on the local cloud; bob is a USER member of it


def _alice_machine(site: Site) -> str:
    """alice's machine on the local cloud, ACTIVE, shared with bob as USER."""
    with closing(api_client(site.url, "alice")) as alice:
        uid = local_desktop(site, alice, "Beamtime analysis")
        r = alice.post(f"/api/instances/{uid}/members", json={"username": "bob", "role": "USER"})
        assert r.status_code in (200, 201), r.text
    return uid


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Together]:
    inbox = Inbox()
    smtp_port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()

    def people(env: dict[str, str]) -> None:
        for username, (full_name, roles) in PEOPLE.items():
            role_args = [a for r in roles for a in ("--role", r)]
            cli(env, "users", "add", username, "--full-name", full_name, "--password", f"{username}-password",
                "--email", f"{username}@example.org", *role_args)

    try:
        with local_site(tmp_path_factory.mktemp("visa-together") / "var", "together-browser-test-secret", [
            {"id": "ev280-id21-1", "proposal": "ev280", "proposal_title": "Trace elements in Roman glass",
             "instrument": "id21", "start_date": "2026-11-20", "end_date": "2026-11-23", "title": "XRF mapping",
             "members": [{"username": "alice", "full_name": "Alice Martin"}, {"username": "bob"}]},
        ], dirs=("visitor/ev280/id21", "processed/ev280/id21"), people=people, VISA_SMTP__ENABLED="true",
           VISA_SMTP__HOST="127.0.0.1", VISA_SMTP__PORT=str(smtp_port), VISA_SMTP__SENDER="visa@visa.test") as s:
            yield Together(**vars(s), inbox=inbox, uid=_alice_machine(s))
    finally:
        smtp.stop()


@pytest.fixture(scope="module")
def browser(site: Together) -> Iterator[Any]:
    with chromium() as b:
        yield b


def person(browser: Any, site: Together, username: str) -> Any:
    """A browser context of its own for ``username``, logged in."""
    return logged_in(browser, site.url, username)


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def present(page: Any) -> list[str]:
    return page.eval_on_selector_all("#presence-list li", "els => els.map(e => e.dataset.present)")


def open_desktop(ctx: Any, uid: str) -> Any:
    page = ctx.new_page()
    page.goto(f"/instances/{uid}/desktop")
    page.wait_for_selector('body[data-desktop="connected"]', state="attached")
    return page


def test_presence_appears_and_disappears(site: Together, browser: Any) -> None:
    alice, bob = person(browser, site, "alice"), person(browser, site, "bob")
    page = alice.new_page()
    page.goto(f"/instances/{site.uid}")
    page.wait_for_selector("#presence-empty:not(.hidden)")
    assert present(page) == []

    desktop = open_desktop(bob, site.uid)
    page.wait_for_selector('#presence-list li[data-present="bob"]')  # live, no reload
    assert "desktop" in page.inner_text('#presence-list li[data-present="bob"]')
    assert page.locator("#presence-empty").is_hidden()
    shot(page, "01-presence-bob-connected")

    desktop.close()  # bob leaves: the socket closes, the row goes, every member is told
    page.wait_for_selector('#presence-list li[data-present="bob"]', state="detached")
    page.wait_for_selector("#presence-empty:not(.hidden)")
    shot(page, "02-presence-gone")
    # bob was told by email when alice added him, with the link to the machine.
    (added,) = [m for m in site.inbox.of_kind("member_added") if m["To"] == "bob@example.org"]
    assert f"{site.url}/instances/{site.uid}" in added.get_body(("plain",)).get_content()
    alice.close()
    bob.close()


def _set_member_access(site: Together, unrestricted: bool | None) -> None:
    """The instance's own owner-presence setting, put back as an operator would between tests."""
    from sqlalchemy import update

    import visa.models  # noqa: F401
    from visa.db import Database
    from visa.instances.models import Instance

    database = Database(f"sqlite:///{site.data_dir / 'visa.db'}")
    with database.unit_of_work() as s:
        s.execute(update(Instance).where(Instance.uid == site.uid).values(unrestricted_member_access=unrestricted))
    database.dispose()


def test_owner_presence_rule_blocks_then_admits(site: Together, browser: Any) -> None:
    try:
        alice, bob = person(browser, site, "alice"), person(browser, site, "bob")
        # alice chooses on her machine's page that her members use the desktop only while she is there;
        # bob, a member, is offered no such choice.
        own = alice.new_page()
        own.goto(f"/instances/{site.uid}")
        assert own.locator('[data-testid="member-access"]').input_value() == "image"
        own.select_option('[data-testid="member-access"]', "owner_required")
        own.click('[data-testid="member-access-save"]')
        own.wait_for_selector(".toast >> text=Saved")
        own.reload()
        assert own.locator('[data-testid="member-access"]').input_value() == "owner_required"
        shot(own, "03-owner-chooses-members-wait")
        own.close()
        ada = api_client(site.url, "ada")  # audited as alice's choice
        r = ada.get("/api/admin/audit", params={"action": "instance.member_access"})
        ada.close()
        assert [(e["actor"], e["details"]["new"]) for e in r.json()["items"]] == [("alice", "owner_required")], r.text
        # bob's desktop asks to connect and is told to wait (Chromium notes the 409 of that answer).
        allow_errors(rf"status of 409 \(Conflict\) \(http://[^)]+/api/instances/{site.uid}/connect\)$")
        info = bob.new_page()
        info.goto(f"/instances/{site.uid}")
        info.wait_for_selector('[data-testid="waiting-for-owner"]')
        assert info.locator('[data-testid="member-access"]').count() == 0
        shot(info, "03-waiting-for-owner-page")
        desktop = bob.new_page()
        desktop.goto(f"/instances/{site.uid}/desktop")
        desktop.wait_for_selector('body[data-desktop="waiting"]', state="attached")
        assert "Waiting for the owner" in desktop.inner_text("#overlay-text")
        shot(desktop, "04-waiting-for-owner-desktop")

        owner_desktop = open_desktop(alice, site.uid)  # the owner connects: bob's desktop opens by itself
        desktop.wait_for_selector('body[data-desktop="connected"]', state="attached")
        info.wait_for_selector('[data-testid="waiting-for-owner"]', state="detached")
        info.wait_for_selector('#presence-list li[data-present="alice"]')
        info.wait_for_selector('#presence-list li[data-present="bob"]')
        shot(desktop, "05-admitted-desktop")

        owner_desktop.close()  # the owner leaves: bob is shown the waiting state again
        info.wait_for_selector('[data-testid="waiting-for-owner"]')
        desktop.close()
        alice.close()
        bob.close()
    finally:
        _set_member_access(site, None)


def test_an_invitation_link_is_redeemed_after_logging_in(site: Together, browser: Any) -> None:
    alice = person(browser, site, "alice")
    page = alice.new_page()
    page.goto(f"/instances/{site.uid}")
    # The dialog says in words what a member is: the owner, inside this machine.
    warning = " ".join(page.inner_text('[data-testid="members-act-as-owner"]').split())
    assert "People you let in as users act as you inside this machine" in warning, warning
    assert "all your machines share" not in warning  # this one has a home of its own
    page.select_option('[data-testid="invite-link-role"]', "GUEST")
    page.click('[data-testid="invite-link-create"]')
    link = page.locator('[data-testid="invite-link"]')
    link.wait_for(state="visible")
    url = link.input_value()
    assert url.startswith(f"{site.url}/invite/"), url
    shot(page, "06-invitation-link")

    carol = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 860})
    carol.set_default_timeout(30_000)
    visitor = carol.new_page()
    visitor.goto(url)
    visitor.wait_for_url(re.compile(r"/login\?next=/invite/"))  # the link is for a person: log in first, then back
    visitor.fill("#username", "carol")
    visitor.fill("#password", "carol-password")
    visitor.click("#login-form button[type=submit]")
    visitor.wait_for_url(url)
    assert visitor.inner_text('[data-testid="invite-name"]') == "Beamtime analysis"
    assert visitor.inner_text('[data-testid="invite-role"]') == "guest"
    shot(visitor, "07-invitation")
    visitor.click('[data-testid="invite-accept"]')
    visitor.wait_for_url(f"**/instances/{site.uid}")
    assert visitor.inner_text('[data-testid="my-role"]') == "guest"
    shot(visitor, "08-invitation-joined")

    page.reload()  # the owner's list of people has carol
    assert "guest" in page.inner_text('#members [data-member="carol"]')
    # Used once: the same link again is refused, and nothing changes.
    allow_errors(r"status of 4\d\d .*/invite/[^)]+\)$")
    again = visitor.goto(url)
    assert again is not None and 400 <= again.status < 500, again and again.status
    assert visitor.locator('[data-testid="invite-accept"]').count() == 0
    shot(visitor, "08b-invitation-used")
    r = alice.request.get(f"/api/instances/{site.uid}/members")
    assert [m["role"] for m in r.json() if m["username"] == "carol"] == ["GUEST"]
    carol.close()
    alice.close()


def test_a_public_view_link_shows_the_desktop_to_someone_without_an_account(site: Together, browser: Any) -> None:
    alice = person(browser, site, "alice")
    page = alice.new_page()
    page.goto(f"/instances/{site.uid}")
    page.fill('[data-testid="view-link-label"]', "Group meeting")
    page.select_option('[data-testid="view-link-hours"]', "1")
    page.click('[data-testid="view-link-create"]')
    link = page.locator('[data-testid="view-link"]')
    link.wait_for()
    url = link.input_value()
    assert url.startswith(f"{site.url}/view/"), url
    page.wait_for_selector('#view-link-list li:has-text("Group meeting")')
    shot(page, "12-view-link-made")

    # Someone with no account: a browser context of its own, never logged in.
    stranger = browser.new_context(viewport={"width": 1280, "height": 860})
    stranger.set_default_timeout(30_000)
    view = stranger.new_page()
    view.goto(url)
    view.wait_for_selector('body[data-view="connected"]', state="attached")
    assert view.inner_text('[data-testid="view-label"]') == "Group meeting"
    view.wait_for_function("() => { const c = document.querySelector('#screen canvas'); return c && c.width > 0; }")
    assert stranger.cookies() == [], "the link makes no session"
    view.click("#screen canvas")
    view.keyboard.type("echo hi\n")  # noVNC sends nothing when view only (and the gateway drops it anyway)
    shot(view, "13-view-link-watching")
    assert stranger.request.get(f"{site.url}/api/me").status == 401

    page.click('#view-link-list li:has-text("Group meeting") [data-testid="view-link-revoke"]')
    page.wait_for_selector('#view-link-list li:has-text("Group meeting")', state="detached")
    allow_errors(r"status of 404 .*/view/[^)]+\)$")
    view.reload()
    assert "not valid any more" in view.inner_text('[data-testid="view-message"]')
    shot(view, "14-view-link-revoked")
    stranger.close()
    alice.close()


def test_support_is_prompted_accepted_and_connects(site: Together, browser: Any) -> None:
    alice, sam = person(browser, site, "alice"), person(browser, site, "sam")
    owner_desktop = open_desktop(alice, site.uid)  # connected: she is asked first
    page = alice.new_page()
    page.goto(f"/instances/{site.uid}")
    page.wait_for_selector('#presence-list li[data-present="alice"]')

    support = sam.new_page()
    support.goto("/support")
    row = support.locator(f'tr[data-support-uid="{site.uid}"]')
    assert "Alice Martin" in row.inner_text()
    shot(support, "09-support-page")
    row.get_by_role("button", name="Ask for access").click()
    support.wait_for_selector(f'tr[data-support-uid="{site.uid}"][data-access="pending"]')

    prompt = page.locator('#support-prompt-list li[data-request="sam"]')
    prompt.wait_for()  # live, on the owner's open page
    assert "it support" in prompt.inner_text()
    shot(page, "10-support-prompt")
    prompt.locator('[data-testid="support-accept"]').click()
    page.wait_for_selector('#members [data-member="sam"]')

    support.wait_for_selector(f'tr[data-support-uid="{site.uid}"][data-access="member"]')
    assert "accepted" in row.locator('[data-role="status"]').inner_text()
    row.get_by_role("link", name="Open desktop").click()
    support.wait_for_selector('body[data-desktop="connected"]', state="attached")
    page.wait_for_selector('#presence-list li[data-present="sam"]')
    shot(page, "11-support-connected")
    support.close()
    page.reload()  # who helped, and when
    assert "sam" in page.inner_text('[data-testid="support-history"]')
    shot(page, "12-support-history")
    owner_desktop.close()
    alice.close()
    sam.close()


def test_extension_requested_accepted_on_the_admin_page_with_emails(site: Together, browser: Any) -> None:
    alice, root = person(browser, site, "alice"), person(browser, site, "ada")
    page = alice.new_page()
    page.goto(f"/instances/{site.uid}")
    page.fill("#ext-comment", "the tomography reconstruction needs another week")
    with page.expect_response(lambda r: r.url.endswith(f"/api/instances/{site.uid}/extensions")) as ext:
        page.click("#extension-form button[type=submit]")
    assert ext.value.status == 201, ext.value.text()
    request = ext.value.json()
    assert request["state"] == "PENDING"
    asked = site.inbox.wait_for_kind("extension_requested", timeout=15)
    assert [m["To"] for m in asked] == ["ada@example.org"]
    assert "Beamtime analysis" in asked[0].get_body(("plain",)).get_content()

    admin = root.new_page()
    admin.goto("/admin/extensions")
    card = admin.get_by_test_id(f"extension-{request['id']}")
    assert "Alice Martin" in card.inner_text() and "tomography" in card.inner_text()
    shot(admin, "13-admin-extensions")
    granted = (datetime.now(UTC) + timedelta(days=20)).replace(second=0, microsecond=0)
    admin.get_by_test_id(f"until-{request['id']}").fill(granted.strftime("%Y-%m-%dT%H:%M"))
    admin.get_by_test_id(f"accept-{request['id']}").click()
    admin.get_by_test_id("no-extensions").wait_for()
    shot(admin, "14-admin-extensions-done")

    ends = alice.request.get(f"/api/instances/{site.uid}").json()["terminates_at"]
    assert datetime.fromisoformat(ends) == granted
    told = site.inbox.wait_for_kind("extension_handled", timeout=15)
    assert [m["To"] for m in told] == ["alice@example.org"]
    text = " ".join(told[0].get_body(("plain",)).get_content().split())
    assert "has been accepted" in text and f"{granted.day} {granted:%B %Y} at {granted:%H:%M} UTC" in text
    alice.close()
    root.close()
