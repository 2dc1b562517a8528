"""The user office's instrument scientists in real headless Chromium against a real visa (uvicorn,
the local cloud, SQLite in a fresh data dir).

The experiments import names irene the scientist of id21 (and so INSTRUMENT_SCIENTIST): on
/support she sees alice's machine, on an id21 experiment, and not bob's, on id16a, which IT
support sees; she joins alice's machine at once (alice is not staff). An administrator makes her
id16a's scientist on /admin/instruments, and bob's machine appears on her /support page.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest

from tests.browser import Site, api_client, chromium, cli, local_desktop, local_site, logged_in

pytestmark = pytest.mark.integration

PEOPLE = {"alice": ("Alice Martin", ()), "bob": ("Bob Durand", ()), "irene": ("Irene Instrument", ()),
          "sam": ("Sam Support", ("IT_SUPPORT",)), "ada": ("Ada Admin", ("ADMIN",))}


def _machine(site: Site, owner: str, name: str, *, wait: bool) -> str:
    """``owner``'s machine on their experiment, on the local cloud (ACTIVE, if ``wait``)."""
    with closing(api_client(site.url, owner)) as client:
        return local_desktop(site, client, name, wait=wait)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, str, str]]:
    def people(env: dict[str, str]) -> None:
        for username, (full_name, roles) in PEOPLE.items():
            role_args = [a for r in roles for a in ("--role", r)]
            cli(env, "users", "add", username, "--full-name", full_name, "--password", f"{username}-password",
                *role_args)

    export = {
        "experiments": [
            {"id": "ev280-id21-1", "proposal": "ev280", "instrument": "id21", "start_date": "2026-11-20",
             "end_date": "2026-11-23", "title": "XRF mapping", "members": ["alice"]},
            {"id": "ma6012-id16a-1", "proposal": "ma6012", "instrument": "id16a", "start_date": "2026-11-20",
             "end_date": "2026-11-23", "title": "Holotomography", "members": ["bob"]},
        ],
        # irene has no role of her own: the import makes her INSTRUMENT_SCIENTIST.
        "instruments": [{"name": "id21", "scientists": ["irene"]}, {"name": "id16a", "scientists": []}],
    }
    dirs = ("visitor/ev280/id21", "processed/ev280/id21", "visitor/ma6012/id16a", "processed/ma6012/id16a")
    with local_site(tmp_path_factory.mktemp("visa-office") / "var", "office-browser-test-secret", export,
                    dirs=dirs, people=people) as s:
        alices = _machine(s, "alice", "Roman glass", wait=True)
        bobs = _machine(s, "bob", "Cathodes", wait=False)
        yield s, alices, bobs


@pytest.fixture(scope="module")
def browser(site: tuple[Site, str, str]) -> Iterator[Any]:
    with chromium() as b:
        yield b




def _listed(page: Any) -> set[str]:
    return set(page.locator("tr[data-support-uid]").evaluate_all("rows => rows.map(r => r.dataset.supportUid)"))


def test_an_instrument_scientist_sees_their_instruments_machines_and_joins_one(
    site: tuple[Site, str, str], browser: Any
) -> None:
    s, alices, bobs = site
    sam = logged_in(browser, s.url, "sam")
    everything = sam.new_page()
    everything.goto("/support")
    assert _listed(everything) == {alices, bobs}  # IT support: every machine
    sam.close()

    irene = logged_in(browser, s.url, "irene")
    page = irene.new_page()
    page.goto("/support")
    assert _listed(page) == {alices}  # her instrument's machine alone
    assert page.locator("#support-instrument option").all_inner_texts() == ["All", "id21"]
    row = page.locator(f'tr[data-support-uid="{alices}"]')
    assert "Alice Martin" in row.inner_text() and "id21" in row.inner_text()
    row.get_by_role("button", name="Ask for access").click()
    page.wait_for_selector(f'tr[data-support-uid="{alices}"][data-access="member"]')  # alice is not staff: at once
    members = irene.request.get(f"/api/instances/{alices}/members").json()
    assert [m["role"] for m in members if m["username"] == "irene"] == ["SUPPORT"]
    assert irene.request.get(f"/api/instances/{bobs}").status == 404  # not even visible

    ada = logged_in(browser, s.url, "ada")
    admin = ada.new_page()
    admin.goto("/admin/instruments")
    form = admin.locator('tr[data-instrument="id16a"] form')
    form.locator('input[name="username"]').fill("irene")
    with admin.expect_navigation():  # the page reloads once the API said yes
        form.get_by_role("button", name="Add").click()
    assert "irene" in admin.locator('tr[data-instrument="id16a"]').inner_text()
    ada.close()

    page.goto("/support")
    assert _listed(page) == {alices, bobs}
    irene.close()
