"""Login through a real OIDC server with Keycloak's URL layout (tests/oidc/server.js, npm
oidc-provider) on loopback: the browser flow, bearer JWTs, refresh and logout."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import pytest

from visa.settings import OidcSettings, PosixSettings, Settings

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parents[1] / "oidc"
BASE = "http://127.0.0.1:8080"  # the app's base_url; the Flask test client plays the server
CALLBACK = f"{BASE}/auth/callback"


@pytest.fixture(scope="module")
def idp() -> Iterator[str]:
    """The OIDC server's base URL (what OidcSettings.server_url names)."""
    node = shutil.which("node")
    if node is None or not (HERE / "node_modules" / "oidc-provider").is_dir():
        reason = "node or tests/oidc/node_modules missing: run scripts/setup.sh"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    env = {**os.environ, "OIDC_PORT": "0", "OIDC_REDIRECTS": CALLBACK, "OIDC_POST_LOGOUT": f"{BASE}/login?logged_out=1"}
    proc = subprocess.Popen([node, "server.js"], cwd=HERE, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 20
        issuer = None
        while time.monotonic() < deadline and issuer is None:
            line = proc.stdout.readline() if proc.stdout else ""
            if line.startswith("ready "):
                issuer = line.split()[1]
            elif not line and proc.poll() is not None:
                break
        assert issuer, "the OIDC server did not start"
        yield issuer.split("/realms/")[0] + "/"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def oidc_app(idp, db, clock, tmp_path):
    from visa.web.app import create_app

    settings = Settings(
        data_dir=tmp_path / "data", database_url=db.url, secret_key="test-secret-key", base_url=BASE,
        oidc=OidcSettings(server_url=idp, realm="visa", client_id="visa", client_secret="visa-secret",
                          role_claim="realm_access.roles", role_mapping={"visa-admin": "ADMIN"},
                          uid_claim="uidNumber", gid_claim="gidNumber", groups_claim="gidNumbers",
                          home_claim="homeDirectory"),
        posix=PosixSettings(sources=["oidc", "import", "cli", "admin"]),  # the test provider is the directory
    )
    app = create_app(settings, database=db, clock=clock)
    app.config["TESTING"] = True
    return app


def _follow(browser: httpx.Client, response: httpx.Response) -> httpx.Response:
    """Follow the provider's redirects until it answers a page or sends us back to visa."""
    while response.status_code in (302, 303) and not response.headers["location"].startswith(BASE):
        response = browser.get(urljoin(str(response.url), response.headers["location"]))
    return response


def _sign_in(browser: httpx.Client, page: httpx.Response, username: str, password: str) -> httpx.Response:
    action = re.search(r'action="([^"]+)"', page.text).group(1)
    r = browser.post(urljoin(str(page.url), action), data={"username": username, "password": password})
    return _follow(browser, r)


def browser_login(app, username: str, password: str, next_url: str = "/instances/x"):
    """Drive the real flow: visa -> provider login form -> visa callback. Returns (flask client, browser)."""
    client = app.test_client()
    browser = httpx.Client(follow_redirects=False)
    r = client.get(f"/login/oidc?next={next_url}")
    assert r.status_code == 303
    page = _follow(browser, browser.get(r.headers["Location"]))
    assert page.status_code == 200 and 'name="password"' in page.text
    back = _sign_in(browser, page, username, password)
    assert back.headers["location"].startswith(CALLBACK), back.headers.get("location")
    done = client.get(back.headers["location"][len(BASE):])
    assert done.status_code == 303, done.get_data(as_text=True)[:300]
    assert done.headers["Location"] == next_url
    return client, browser


def token_for(idp: str, username: str, password: str, resource: str = "urn:visa:api",
              scope: str = "openid profile") -> dict:
    """Tokens through the code flow, as a script would get them (resource picks the audience)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    realm = f"{idp}realms/visa/protocol/openid-connect"
    browser = httpx.Client(follow_redirects=False)
    query = {"client_id": "visa", "response_type": "code", "redirect_uri": CALLBACK, "scope": scope,
             "state": "s", "code_challenge": challenge, "code_challenge_method": "S256", "resource": resource}
    page = _follow(browser, browser.get(f"{realm}/auth?{urlencode(query)}"))
    back = _sign_in(browser, page, username, password)
    code = parse_qs(urlsplit(back.headers["location"]).query)["code"][0]
    r = httpx.post(f"{realm}/token", data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK,
                                           "code_verifier": verifier, "client_id": "visa",
                                           "client_secret": "visa-secret", "resource": resource})
    assert r.status_code == 200, r.text
    return r.json()


def _row(db, client):
    """The server-side session of a test client's cookie."""
    from visa.auth.sessions import _sid_hash
    from visa.users.models import LoginSession

    with client.session_transaction() as s:
        sid = s.get("sid")
    with db.sessionmaker() as s:
        return s.get(LoginSession, _sid_hash(sid)) if sid else None


def test_browser_login_creates_the_user_maps_roles_and_logs_out(oidc_app, idp, db, clock) -> None:
    client, browser = browser_login(oidc_app, "alice", "alice-password")
    me = client.get("/api/me").get_json()
    assert me["username"] == "alice" and me["full_name"] == "Alice Liddell" and me["roles"] == []
    assert client.post("/api/login", json={"username": "alice", "password": "x"}).status_code == 403  # local: off

    admin, _ = browser_login(oidc_app, "sam", "sam-password")
    assert admin.get("/api/me").get_json()["roles"] == ["ADMIN"]  # visa-admin mapped; visa-staff not mapped

    # The refresh token stays on the server: the cookie holds a session id, nothing of the provider's.
    first = _row(db, client)
    assert first.method == "oidc" and first.refresh_token
    with client.session_transaction() as s:
        assert set(s) <= {"user_id", "sid", "epoch", "csrf", "_permanent"}
        csrf = s["csrf"]
    assert first.refresh_token not in client.get_cookie("visa_session").value
    clock.advance(seconds=oidc_app.extensions["visa"].settings.oidc.refresh_seconds)  # the next request refreshes
    assert client.get("/api/me").status_code == 200
    refreshed = _row(db, client)
    assert refreshed.refresh_at > clock.now() and refreshed.refresh_token
    refresh_token = refreshed.refresh_token

    r = client.post("/logout", data={"csrf_token": csrf})
    assert r.status_code == 303 and r.headers["Location"].startswith(f"{idp}realms/visa/protocol/openid-connect/logout")
    assert client.get("/api/me").status_code == 401
    # the provider's session ended too: its refresh token is dead, and a new login asks for the password
    realm = f"{idp}realms/visa/protocol/openid-connect"
    dead = httpx.post(f"{realm}/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token,
                                              "client_id": "visa", "client_secret": "visa-secret"})
    assert dead.status_code == 400
    again = client.get("/login/oidc")
    page = _follow(browser, browser.get(again.headers["Location"]))
    assert 'name="password"' in page.text


def test_session_ends_when_the_provider_session_ends(oidc_app, idp, db, clock) -> None:
    client, _ = browser_login(oidc_app, "bob", "bob-password")
    rt = _row(db, client).refresh_token
    # the user logs out of the provider elsewhere (Keycloak's back-channel logout)
    r = httpx.post(f"{idp}realms/visa/protocol/openid-connect/logout",
                   data={"refresh_token": rt, "client_id": "visa", "client_secret": "visa-secret"})
    assert r.status_code == 204
    assert client.get("/api/me").status_code == 200  # until the next refresh...
    clock.advance(seconds=oidc_app.extensions["visa"].settings.oidc.refresh_seconds)
    assert client.get("/api/me").status_code == 401  # ...then the refresh fails and the session ends
    assert _row(db, client) is None


def test_callback_refuses_forged_state_and_replay(oidc_app) -> None:
    client = oidc_app.test_client()
    browser = httpx.Client(follow_redirects=False)
    r = client.get("/login/oidc")
    page = _follow(browser, browser.get(r.headers["Location"]))
    back = _sign_in(browser, page, "alice", "alice-password")
    url = back.headers["location"][len(BASE):]
    forged = re.sub(r"state=[^&]+", "state=forged", url)
    assert client.get(forged).status_code == 400  # state mismatch (and the flow is spent)
    assert client.get(url).status_code == 400  # no login in progress any more
    assert client.get("/api/me").status_code == 401
    other = oidc_app.test_client()  # a callback in a browser that never started a login
    assert other.get(url).status_code == 400 and other.get("/api/me").status_code == 401


def test_bearer_access_tokens(oidc_app, idp, monkeypatch) -> None:
    from jwcrypto import jwk, jwt

    from visa.auth import oidc

    c = oidc_app.test_client()
    good = token_for(idp, "alice", "alice-password")["access_token"]
    r = c.get("/api/me", headers={"Authorization": f"Bearer {good}"})
    assert r.status_code == 200 and r.get_json()["username"] == "alice"
    assert c.get("/api/instances", headers={"Authorization": f"Bearer {good}"}).status_code == 200

    wrong_aud = token_for(idp, "alice", "alice-password", "urn:other:api")["access_token"]
    assert c.get("/api/me", headers={"Authorization": f"Bearer {wrong_aud}"}).status_code == 401

    # same claims and key id, signed with another key
    header = json.loads(base64.urlsafe_b64decode(good.split(".")[0] + "=="))
    claims = json.loads(base64.urlsafe_b64decode(good.split(".")[1] + "=="))
    other_key = jwk.JWK.generate(kty="RSA", size=2048, kid=header.get("kid"))
    forged = jwt.JWT(header={"alg": "RS256", "kid": header.get("kid")}, claims=claims)
    forged.make_signed_token(other_key)
    assert c.get("/api/me", headers={"Authorization": f"Bearer {forged.serialize()}"}).status_code == 401
    # unsigned ("alg": "none") and HMAC with the public key as secret
    none = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode() + "." + good.split(".")[1] + "."
    assert c.get("/api/me", headers={"Authorization": f"Bearer {none}"}).status_code == 401
    hs = jwt.JWT(header={"alg": "HS256"}, claims=claims)
    hs.make_signed_token(jwk.JWK(kty="oct", k=base64.urlsafe_b64encode(b"k" * 32).decode()))
    assert c.get("/api/me", headers={"Authorization": f"Bearer {hs.serialize()}"}).status_code == 401
    # an ID token is not an access token, even with our audience
    id_token = token_for(idp, "alice", "alice-password")["id_token"]
    assert c.get("/api/me", headers={"Authorization": f"Bearer {id_token}"}).status_code == 401

    monkeypatch.setattr(oidc, "LEEWAY", 0)
    short = token_for(idp, "alice", "alice-password", "urn:visa:short")["access_token"]
    assert c.get("/api/me", headers={"Authorization": f"Bearer {short}"}).status_code == 200
    time.sleep(3.1)
    assert c.get("/api/me", headers={"Authorization": f"Bearer {short}"}).status_code == 401  # expired


def _set_roles(idp: str, user: str, roles: list[str]) -> None:
    r = httpx.post(f"{idp.rstrip('/')}/test/roles", params={"user": user, "roles": ",".join(roles)})
    assert r.status_code == 204


def test_a_role_removed_at_the_provider_stops_within_one_refresh_period(oidc_app, idp, db, clock) -> None:
    from visa.users.models import User

    period = oidc_app.extensions["visa"].settings.oidc.refresh_seconds
    admin, _ = browser_login(oidc_app, "sam", "sam-password")
    assert admin.get("/api/me").get_json()["roles"] == ["ADMIN"]
    assert admin.get("/api/admin/users").status_code == 200
    with db.sessionmaker() as s:
        assert s.query(User).filter_by(username="sam").one().idp_roles == "ADMIN"  # what others see of sam
    due = _row(db, admin).refresh_at
    assert 0 < (due - clock.now()).total_seconds() <= period
    try:
        _set_roles(idp, "sam", ["visa-staff"])  # visa-admin taken away in the provider
        clock.set(due - timedelta(seconds=1))
        assert admin.get("/api/admin/users").status_code == 200  # not re-read yet: within the period
        clock.set(due)
        assert admin.get("/api/admin/users").status_code == 403
        assert admin.get("/api/me").get_json()["roles"] == []
        with db.sessionmaker() as s:
            assert s.query(User).filter_by(username="sam").one().idp_roles == ""
        _set_roles(idp, "sam", ["visa-admin", "visa-staff"])  # and given back
        clock.advance(seconds=period)
        assert admin.get("/api/me").get_json()["roles"] == ["ADMIN"]
    finally:
        _set_roles(idp, "sam", ["visa-admin", "visa-staff"])


def test_an_oidc_token_mints_api_tokens_only_with_the_scope_for_it(oidc_app, idp, db) -> None:
    c = oidc_app.test_client()
    plain = token_for(idp, "alice", "alice-password")["access_token"]
    auth = {"Authorization": f"Bearer {plain}"}
    assert c.get("/api/me", headers=auth).status_code == 200  # a good token for the API...
    r = c.post("/api/tokens", headers=auth, json={"name": "from a script"})
    assert r.status_code == 403, r.get_json()  # ...but not for a long-lived successor
    assert c.get("/api/tokens", headers=auth).get_json() == []

    scoped = token_for(idp, "alice", "alice-password", scope="openid profile visa:tokens")["access_token"]
    r = c.post("/api/tokens", headers={"Authorization": f"Bearer {scoped}"}, json={"name": "from a script"})
    assert r.status_code == 201, r.get_json()
    api_token = r.get_json()["token"]
    # an API token never mints another, whatever its scope
    r = c.post("/api/tokens", headers={"Authorization": f"Bearer {api_token}"}, json={"name": "successor"})
    assert r.status_code == 403


def test_a_first_login_does_not_take_over_a_local_account_of_the_same_name(oidc_app, db, clock) -> None:
    from tests.factories import make_user
    from visa.users.models import Role, User

    with db.unit_of_work() as s:
        make_user(s, clock, "alice", password="local-pw", roles=(Role.ADMIN,))
    client, _ = browser_login(oidc_app, "alice", "alice-password")
    me = client.get("/api/me").get_json()
    assert me["username"] == "alice-2" and me["roles"] == []  # a distinct account, nothing inherited
    again, _ = browser_login(oidc_app, "alice", "alice-password")
    assert again.get("/api/me").get_json()["username"] == "alice-2"
    with db.sessionmaker() as s:
        local = s.query(User).filter_by(username="alice").one()
        assert local.external_id is None


def test_roles_unconfirmed_while_the_provider_is_down_stop_counting(oidc_app, db, clock, monkeypatch) -> None:
    from visa.auth.oidc import OidcClient

    period = timedelta(seconds=oidc_app.extensions["visa"].settings.oidc.refresh_seconds)
    admin, _ = browser_login(oidc_app, "sam", "sam-password")
    assert admin.get("/api/admin/users").status_code == 200
    due = _row(db, admin).refresh_at

    def unreachable(self, refresh_token):
        # Double: the provider's outage. The real server is shared by this module's tests, so it stays up.
        raise OSError("connection refused")

    monkeypatch.setattr(OidcClient, "refresh", unreachable)
    clock.set(due)
    assert admin.get("/api/admin/users").status_code == 200  # a short outage: the session and roles go on
    clock.set(due + period)
    assert admin.get("/api/admin/users").status_code == 403  # unconfirmed for a whole period: dropped
    assert admin.get("/api/me").status_code == 200  # the session itself goes on
    monkeypatch.undo()
    assert admin.get("/api/admin/users").status_code == 200  # the provider answers again: confirmed


def test_the_unix_identity_comes_from_the_providers_claims(oidc_app, db) -> None:
    from sqlalchemy import select

    from visa.audit.models import AuditEvent
    from visa.users.models import User

    browser_login(oidc_app, "alice", "alice-password")
    browser_login(oidc_app, "bob", "bob-password")
    with db.sessionmaker() as s:
        alice = s.scalar(select(User).where(User.username == "alice"))
        bob = s.scalar(select(User).where(User.username == "bob"))
        assert (alice.uid_number, alice.gid_number, alice.extra_gids, alice.home_path, alice.posix_source) == (
            23456, 23456, [24001, 24002], "/home/alice", "oidc")
        assert (bob.uid_number, bob.posix_source) == (None, None)  # no claims: nothing taken
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "user.posix")))
        assert [(e.target_id, e.details["source"]) for e in events] == [(str(alice.id), "oidc")]
    browser_login(oidc_app, "alice", "alice-password")  # the same claims again: no change, no audit row
    with db.sessionmaker() as s:
        assert len(list(s.scalars(select(AuditEvent).where(AuditEvent.action == "user.posix")))) == 1


def test_claims_are_read_as_ldap_gives_them() -> None:
    from visa.auth.oidc import posix_from_claims

    settings = OidcSettings(uid_claim="ldap.uidNumber", gid_claim="gidNumber", groups_claim="groups",
                            home_claim="home")
    got = posix_from_claims({"ldap": {"uidNumber": ["23456"]}, "gidNumber": "23400", "groups": "24001, 24002 x",
                             "home": "/home/a"}, settings)
    assert got is not None and (got.uid_number, got.gid_number, got.extra_gids, got.home_path) == (
        23456, 23400, (24001, 24002), "/home/a")
    assert posix_from_claims({"gidNumber": 5}, settings) is None  # no uid: not an identity
    assert posix_from_claims({"ldap": {"uidNumber": True}}, settings) is None
    assert posix_from_claims({"ldap": {"uidNumber": 1000}}, OidcSettings()) is None  # no claim names set


def test_a_first_login_may_not_take_a_system_accounts_name(oidc_app, idp, db) -> None:
    """Anyone may sign up at the provider as ``root`` or ``visa`` (the activity probe's account):
    visa refuses the name, saying so, and makes no account."""
    from visa.users.models import User

    for name in ("root", "visa"):
        r = httpx.post(f"{idp}test/register", params={"user": name, "password": "chosen-password"})
        assert r.status_code in (201, 409), r.text
        client = oidc_app.test_client()
        browser = httpx.Client(follow_redirects=False)
        start = client.get("/login/oidc?next=/")
        back = _sign_in(browser, _follow(browser, browser.get(start.headers["Location"])), name, "chosen-password")
        done = client.get(back.headers["location"][len(BASE):])
        page = html.unescape(done.get_data(as_text=True))
        assert done.status_code == 401 and f"your account name {name!r} is reserved" in page
        assert client.get("/api/me").status_code == 401
    with db.sessionmaker() as s:
        assert s.query(User).filter(User.username.in_(["root", "visa"])).count() == 0
