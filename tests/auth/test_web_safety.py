"""The field's known holes, as tests: CSRF, open redirect, login CSRF, rate limits, logged input,
API token scopes, secrets in API answers. On both databases."""

from __future__ import annotations

import logging
import re

import pytest
from sqlalchemy import select

from tests.auth.world import PASSWORD, login, seed
from visa.audit.models import AuditEvent


def _form_login(c, username: str, password: str, next_url: str = "/", **headers: str):
    page = c.get(f"/login?next={next_url}")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    return c.post("/login", data={"username": username, "password": password, "csrf_token": token,
                                  "next": next_url}, headers=headers)


def test_login_page_form_and_no_open_redirect(db, clock, app) -> None:
    seed(db, clock)
    for evil in ("//evil.example/x", "https://evil.example", "/\\evil.example", "/%0d%0aSet-Cookie:x",
                 "javascript:alert(1)", "\\\\evil.example"):
        c = app.test_client()
        r = _form_login(c, "owner", PASSWORD, evil)
        assert r.status_code == 303, (evil, r.status_code)
        loc = r.headers["Location"]
        assert loc in ("/", "/%0d%0aSet-Cookie:x") and "evil" not in loc, (evil, loc)
    c = app.test_client()
    r = _form_login(c, "owner", PASSWORD, "/instances/abc?x=1")
    assert r.headers["Location"] == "/instances/abc?x=1"
    assert c.get("/api/me").get_json()["username"] == "owner"
    # the login page keeps 'next' only when it is safe
    assert "evil" not in app.test_client().get("/login?next=//evil.example").get_data(as_text=True)


def test_login_csrf_and_cross_site_posts_are_refused(db, clock, app, api_client) -> None:
    world = seed(db, clock)
    c = app.test_client()
    # no token from our login page: refused (another site cannot log this browser in)
    r = c.post("/login", data={"username": "owner", "password": PASSWORD})
    assert r.status_code == 400 and c.get("/api/me").status_code == 401
    # a cross-site form post to the JSON login, or any state change, is refused by Origin
    r = c.post("/api/login", data={"username": "owner", "password": PASSWORD},
               headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    owner = login(api_client, db, "owner")
    for url, body in [("/api/instances", {"name": "x", "plan_id": world.plan_id, "experiment_ids": []}),
                      (f"/api/instances/{world.uid}/members", {"username": "other", "role": "USER"})]:
        assert owner.client.post(url, json=body).status_code == 403  # no CSRF token: create, share
        assert owner.post(url, json=body, headers={"Origin": "https://evil.example"}).status_code == 403
        assert owner.post(url, json=body, headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert [m["username"] for m in owner.get(f"/api/instances/{world.uid}/members").get_json()].count("other") == 0


@pytest.mark.usefixtures("committed_db")  # a failed login is audited apart from the refused request
def test_login_rate_limit_and_failures_audited(db, clock, app) -> None:
    seed(db, clock)
    c = app.test_client()
    codes = [c.post("/api/login", json={"username": "owner", "password": "wrong"}).status_code for _ in range(7)]
    assert codes == [401] * 5 + [429] * 2
    # even the right password waits (per IP+username), another user from the same IP does not
    assert c.post("/api/login", json={"username": "owner", "password": PASSWORD}).status_code == 429
    assert c.post("/api/login", json={"username": "member", "password": PASSWORD}).status_code == 200
    clock.advance(seconds=301)
    assert c.post("/api/login", json={"username": "owner", "password": PASSWORD}).status_code == 200
    with db.sessionmaker() as s:
        events = [(e.action, e.details.get("username")) for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))
                  if e.action.startswith("login")]
    assert events.count(("login.failure", "owner")) == 5
    assert [a for a, _ in events if a == "login"] == ["login", "login"]


def test_huge_usernames_and_headers_are_not_logged(db, clock, app, caplog) -> None:
    seed(db, clock)
    c = app.test_client()
    caplog.set_level(logging.DEBUG)
    huge = "A" * 200_000
    assert c.post("/api/login", json={"username": huge, "password": "x"}).status_code == 400
    r = _form_login(c, "x" * 40 + "\nFAKE LOG LINE", "wrong")
    assert r.status_code == 401
    assert c.get("/api/me", headers={"Authorization": "Bearer " + huge}).status_code == 401
    assert c.get("/api/me", headers={"Authorization": "Bearer visa_" + huge}).status_code == 401
    for record in caplog.records:
        text = record.getMessage()
        assert len(text) < 2_000, text[:200]
        assert "\nFAKE" not in text
    with db.sessionmaker() as s:
        for e in s.scalars(select(AuditEvent)):
            assert len(str(e.details)) < 2_000 and len(e.actor_name) <= 64


def test_api_tokens_rest_scopes_and_revocation(db, clock, app, api_client) -> None:
    world = seed(db, clock)
    owner = login(api_client, db, "owner")
    r = owner.post("/api/tokens", json={"name": "read", "scopes": "api:read", "expires_in_days": 7})
    assert r.status_code == 201
    read = r.get_json()
    assert read["token"].startswith("visa_") and read["scopes"] == ["api:read"]
    write = owner.post("/api/tokens", json={"name": "write"}).get_json()
    listed = owner.get("/api/tokens").get_json()
    assert {t["name"] for t in listed} == {"script", "read", "write"}
    assert all("token" not in t and "token_hash" not in t for t in listed)  # never the secret again
    assert owner.post("/api/tokens", json={"name": "x", "expires_in_days": 10_000}).status_code == 400

    c = app.test_client()
    ro = {"Authorization": f"Bearer {read['token']}"}
    rw = {"Authorization": f"Bearer {write['token']}"}
    assert c.get("/api/instances", headers=ro).status_code == 200
    body = {"name": "x", "plan_id": world.plan_id, "experiment_ids": [world.experiment_id]}
    assert c.post("/api/instances", json=body, headers=ro).status_code == 403  # api:read = GET only
    assert c.post(f"/api/instances/{world.uid}/reboot", headers=ro).status_code == 403
    assert c.post("/api/instances", json=body, headers=rw).status_code == 201  # no CSRF needed for bearer
    assert c.post("/api/tokens", json={"name": "child"}, headers=rw).status_code == 403  # no token minting
    assert c.get("/", headers=rw).status_code in (302, 401, 403)  # tokens are for /api/ only
    assert c.get("/api/instances", headers={"Authorization": "Bearer visa_nope"}).status_code == 401
    # another user cannot see or revoke my token
    other = login(api_client, db, "other")
    assert other.delete(f"/api/tokens/{write['id']}").status_code == 404
    assert owner.delete(f"/api/tokens/{write['id']}").status_code == 200
    assert c.get("/api/instances", headers=rw).status_code == 401
    clock.advance(days=8)
    assert c.get("/api/instances", headers=ro).status_code == 401  # expired


def test_no_secret_or_connect_token_in_api_answers(db, clock, api_client) -> None:
    """A tunnel id or desktop secret leaked in a REST answer lets another user in (Guacamole CVE-2021-41767)."""
    world = seed(db, clock)
    with db.sessionmaker() as s:
        from visa.instances.models import Instance

        secret = s.scalar(select(Instance.secret).where(Instance.uid == world.uid))
    for who in ("owner", "member", "guest", "support", "admin"):
        c = login(api_client, db, who)
        for url in ("/api/instances", f"/api/instances/{world.uid}", f"/api/instances/{world.uid}/members",
                    f"/api/admin/instances/{world.uid}", "/api/admin/instances", "/api/me"):
            r = c.get(url)
            text = r.get_data(as_text=True)
            assert secret not in text, (who, url)
            assert "token_hash" not in text and "password_hash" not in text, (who, url)


def test_security_headers_and_cookie(db, clock, app) -> None:
    seed(db, clock)
    c = app.test_client()
    r = c.get("/login")
    for header in ("Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy"):
        assert header in r.headers
    assert r.headers["Cache-Control"] == "no-store"
    r = _form_login(c, "owner", PASSWORD)
    cookie = r.headers.get("Set-Cookie", "")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_logout_ends_the_session(db, clock, app) -> None:
    seed(db, clock)
    c = app.test_client()
    _form_login(c, "owner", PASSWORD)
    assert c.get("/api/me").status_code == 200
    assert c.get("/logout").status_code == 200  # a page with a button: a link logs nobody out
    assert c.get("/api/me").status_code == 200
    page = c.get("/logout").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert c.post("/logout").status_code == 403  # without the token
    r = c.post("/logout", data={"csrf_token": token})
    assert r.status_code == 303 and "/login" in r.headers["Location"]
    assert c.get("/api/me").status_code == 401
