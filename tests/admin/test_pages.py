"""Admin pages render for admins, refuse others, and show what the services say."""

from __future__ import annotations

from tests.admin.world import build


def _login(api_client, username: str):
    c = api_client()
    assert c.login(username, f"{username}-password").status_code == 200
    return c


def test_pages_for_admins_only(db, clock, api_client) -> None:
    world = build(db, clock)
    admin = _login(api_client, "root")
    a1 = world.uids["a1"]
    for url, needle in (("/admin/", "By state"), ("/admin/instances", "first"),
                        ("/admin/instances?state=&owner=alice&sort=name", "second"),
                        (f"/admin/instances/{a1}", "#cloud-config"), ("/admin/catalogue", "esrf.medium"),
                        ("/admin/users?q=ali", "alice@example.org"), ("/admin/notifications", "New notification"),
                        ("/admin/instruments", 'data-instrument="id21"'),
                        ("/admin/audit", "Audit log")):
        r = admin.get(url)
        assert r.status_code == 200, (url, r.status_code, r.get_data(as_text=True)[:300])
        assert needle in r.get_data(as_text=True), url
    page = admin.get(f"/admin/instances/{a1}").get_data(as_text=True)
    assert 'data-testid="action-reboot"' in page and "alice" in page
    user = _login(api_client, "alice")
    assert user.get("/admin/").status_code == 403
    assert user.get(f"/admin/instances/{a1}").status_code == 403
    anonymous = api_client().get("/admin/users")
    assert anonymous.status_code == 302 and "/login?next=/admin/users" in anonymous.headers["Location"]
    assert admin.get("/admin/instances?sort=nonsense").status_code == 400


def test_the_dashboard_says_how_the_local_cloud_isolates(db, clock, api_client) -> None:
    from visa.clouds.local import LocalProvider
    from visa.clouds.service import clear_cache

    build(db, clock)
    clear_cache()
    page = _login(api_client, "root").get("/admin/").get_data(as_text=True)
    isolated, how = LocalProvider("local", {"root_dir": "/nonexistent"}).isolation()
    assert 'data-testid="isolation-local"' in page and "Isolation: " in page
    assert how.split(" (")[0] in page.replace("&#39;", "'")
    assert ('class="muted" data-testid="isolation-local"' in page) == isolated


def test_the_pager_of_a_list_counted_short(db, clock, api_client, monkeypatch) -> None:
    import visa.paging

    build(db, clock)
    admin = _login(api_client, "root")
    monkeypatch.setattr(visa.paging, "COUNT_LIMIT", 1)
    first = admin.get("/admin/instances?sort=created_at&per_page=1").get_data(as_text=True)
    assert "more than 1" in first and 'rel="next"' in first
    last = admin.get("/admin/instances?sort=created_at&per_page=1&page=3").get_data(as_text=True)
    assert "page 3" in last and 'rel="next"' in last  # full: there may be more
    past = admin.get("/admin/instances?sort=created_at&per_page=1&page=4").get_data(as_text=True)
    assert 'rel="next"' not in past and 'rel="prev"' in past
    monkeypatch.setattr(visa.paging, "COUNT_LIMIT", 10_000)
    exact = admin.get("/admin/instances?sort=created_at&per_page=2").get_data(as_text=True)
    assert "page 1 of 2 · 3 in all" in exact
