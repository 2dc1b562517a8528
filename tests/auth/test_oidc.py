"""Login through a real OIDC server (tests/oidc/server.js, npm oidc-provider) on loopback: the
browser flow, bearer JWTs, refresh and logout. Every test runs twice: against Keycloak's URL
layout (configured by ``server_url`` and ``realm``) and against a plain issuer with the research
federations' entitlement claims (configured by ``issuer``, everything else from discovery)."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import queue
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import pytest

from visa.settings import OidcSettings, PosixSettings, Settings

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parents[1] / "oidc"
BASE = "http://127.0.0.1:8080"  # the app's base_url; the Flask test client plays the server
CALLBACK = f"{BASE}/auth/callback"
VO = "urn:mace:egi.eu:group:vo.example.eu"


@dataclass
class Idp:
    """A running test provider: its layout, base URL (where /test/... is served) and issuer."""

    layout: str
    base: str
    issuer: str
    _discovery: dict[str, Any] = field(default_factory=dict)

    def endpoint(self, name: str) -> str:
        if not self._discovery:
            r = httpx.get(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
            self._discovery.update(r.json())
        return str(self._discovery[name])

    def provider_settings(self) -> dict[str, Any]:
        """The OidcSettings naming this provider, with its roles claim mapped as a facility would."""
        if self.layout == "keycloak":
            return {"server_url": self.base, "realm": "visa", "role_claim": "realm_access.roles",
                    "role_mapping": {"visa-admin": "ADMIN"}}
        return {"issuer": self.issuer, "role_claim": "eduperson_entitlement",
                "role_mapping": {f"{VO}:visa-admin:role=*#aai.example.eu": "ADMIN"}}

    def rotate(self, retire: bool = False) -> str:
        r = httpx.post(f"{self.base}test/rotate", params={"retire": "1"} if retire else {})
        assert r.status_code == 200, r.text
        return str(r.json()["kid"])

    def register(self, user: str, password: str, sub: str | None = None) -> None:
        params = {"user": user, "password": password, **({"sub": sub} if sub else {})}
        r = httpx.post(f"{self.base}test/register", params=params)
        assert r.status_code in (201, 409), r.text


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (HERE / "node_modules" / "oidc-provider").is_dir():
        reason = "node or tests/oidc/node_modules missing: run scripts/setup.sh"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return node


def _start_idp(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[str], str | None]:
    """One start of the provider: its process, and the issuer it announced within 20 s (or None).

    The announcement is read by a thread, so a provider that hangs before it costs 20 s, not the
    test's whole timeout."""
    with log.open("w") as err:
        proc = subprocess.Popen([_node(), "server.js"], cwd=HERE, env=env, stdout=subprocess.PIPE,
                                stderr=err, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in proc.stdout or ():
            lines.put(line)
        lines.put("")  # the end of its output

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 20
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line.startswith("ready "):
            return proc, line.split()[1]
        if not line:
            break
    return proc, None


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def running_idp(layout: str, **env: str) -> Iterator[Idp]:
    """The test provider in ``layout`` (keycloak or plain), on a free loopback port."""
    env = {**os.environ, "OIDC_LAYOUT": layout, "OIDC_PORT": "0", "OIDC_REDIRECTS": CALLBACK,
           "OIDC_POST_LOGOUT": f"{BASE}/login?logged_out=1", **env}
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "idp.log"
        # A start that announced nothing is stopped and tried once more (a loaded CI machine once
        # left one silent for minutes); what it printed is in the failure.
        proc, issuer = _start_idp(env, log)
        if issuer is None:
            _stop(proc)
            first = log.read_text()[-2000:]
            proc, issuer = _start_idp(env, log)
            if issuer is None:
                _stop(proc)
                raise AssertionError(f"the OIDC server did not start: {first}\n{log.read_text()[-2000:]}")
        try:
            yield Idp(layout, issuer.split("/realms/")[0].rstrip("/") + "/", issuer)
        finally:
            _stop(proc)


@pytest.fixture(scope="module", params=["keycloak", "plain"])
def idp(request: pytest.FixtureRequest) -> Iterator[Idp]:
    """The OIDC server, once with Keycloak's URL layout and once as a plain issuer."""
    with running_idp(request.param) as provider:
        yield provider


@pytest.fixture
def oidc_app(idp, db, clock, tmp_path):
    return app_for(idp, db, clock, tmp_path)


def app_for(idp: Idp, db, clock, tmp_path: Path):
    """visa, with ``idp`` as its identity provider."""
    from visa.web.app import create_app

    settings = Settings(
        data_dir=tmp_path / "data", database_url=db.url, secret_key="test-secret-key", base_url=BASE,
        oidc=OidcSettings(**idp.provider_settings(), client_id="visa", client_secret="visa-secret",
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


def token_for(idp: Idp, username: str, password: str, resource: str = "urn:visa:api",
              scope: str = "openid profile") -> dict:
    """Tokens through the code flow, as a script would get them (resource picks the audience; none:
    the provider's default)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    browser = httpx.Client(follow_redirects=False)
    query = {"client_id": "visa", "response_type": "code", "redirect_uri": CALLBACK, "scope": scope,
             "state": "s", "code_challenge": challenge, "code_challenge_method": "S256",
             **({"resource": resource} if resource else {})}
    page = _follow(browser, browser.get(f"{idp.endpoint('authorization_endpoint')}?{urlencode(query)}"))
    back = _sign_in(browser, page, username, password)
    code = parse_qs(urlsplit(back.headers["location"]).query)["code"][0]
    r = httpx.post(idp.endpoint("token_endpoint"), data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK,
                                           "code_verifier": verifier, "client_id": "visa",
                                           "client_secret": "visa-secret",
                                           **({"resource": resource} if resource else {})})
    assert r.status_code == 200, r.text
    return r.json()


def _end_session_in_browser(browser: httpx.Client, url: str) -> str:
    """What a browser does at the provider's end-session page (its script submits the form): the
    address it is sent back to."""
    page = browser.get(url)
    form = re.search(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', page.text, re.S)
    if form is None:  # already logged out there: sent back at once
        return page.headers.get("location", "")
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form.group(2)))
    r = browser.post(urljoin(str(page.url), html.unescape(form.group(1))), data={**fields, "logout": "yes"})
    assert r.status_code in (302, 303), r.text[:300]
    return r.headers["location"]


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
    assert r.status_code == 303 and r.headers["Location"].startswith(idp.endpoint("end_session_endpoint") + "?")
    assert client.get("/api/me").status_code == 401
    # the provider's refresh token is dead at once (Keycloak's back-channel logout, or its revocation)
    dead = httpx.post(idp.endpoint("token_endpoint"), data={"grant_type": "refresh_token", "refresh_token": refresh_token,
                                              "client_id": "visa", "client_secret": "visa-secret"})
    assert dead.status_code == 400
    # and once the browser has been to the provider's end-session page, a new login asks for the password
    assert _end_session_in_browser(browser, r.headers["Location"]).startswith(f"{BASE}/login?logged_out=1")
    again = client.get("/login/oidc")
    page = _follow(browser, browser.get(again.headers["Location"]))
    assert 'name="password"' in page.text


def test_session_ends_when_the_provider_session_ends(oidc_app, idp, db, clock) -> None:
    client, _ = browser_login(oidc_app, "bob", "bob-password")
    rt = _row(db, client).refresh_token
    # the provider ends the user's session elsewhere: Keycloak's back-channel logout, or another
    # provider revoking the grant (RFC 7009)
    credentials = {"client_id": "visa", "client_secret": "visa-secret"}
    if idp.layout == "keycloak":
        r = httpx.post(idp.endpoint("end_session_endpoint"), data={"refresh_token": rt, **credentials})
    else:
        r = httpx.post(idp.endpoint("revocation_endpoint"), data={"token": rt, **credentials})
    assert r.status_code in (200, 204), r.text
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
    from joserfc import jwt
    from joserfc.jwk import OctKey, RSAKey

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
    other_key = RSAKey.generate_key(2048, parameters={"kid": header.get("kid")})
    forged = jwt.encode({"alg": "RS256", "kid": header.get("kid")}, claims, other_key)
    assert c.get("/api/me", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    # unsigned ("alg": "none") and HMAC with the public key as secret
    none = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode() + "." + good.split(".")[1] + "."
    assert c.get("/api/me", headers={"Authorization": f"Bearer {none}"}).status_code == 401
    hs = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(b"k" * 32))
    assert c.get("/api/me", headers={"Authorization": f"Bearer {hs}"}).status_code == 401
    # an ID token is not an access token, even with our audience
    id_token = token_for(idp, "alice", "alice-password")["id_token"]
    assert c.get("/api/me", headers={"Authorization": f"Bearer {id_token}"}).status_code == 401

    monkeypatch.setattr(oidc, "LEEWAY", 0)
    short = token_for(idp, "alice", "alice-password", "urn:visa:short")["access_token"]
    assert c.get("/api/me", headers={"Authorization": f"Bearer {short}"}).status_code == 200
    time.sleep(3.1)
    assert c.get("/api/me", headers={"Authorization": f"Bearer {short}"}).status_code == 401  # expired


def _set_roles(idp: Idp, user: str, roles: list[str]) -> None:
    r = httpx.post(f"{idp.base}test/roles", params={"user": user, "roles": ",".join(roles)})
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
        idp.register(name, "chosen-password")
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


def test_a_rotated_signing_key_is_taken_up_without_a_restart(idp, db, clock, tmp_path, monkeypatch) -> None:
    """The provider rotates its key: the first token signed with the new one makes visa fetch the
    keys again (no restart); made-up key ids then cost the provider no more than one fetch a period."""
    from visa.auth.oidc import OidcClient

    fetches: list[str] = []
    real_fetch = OidcClient.fetch_keys

    def counted(self):  # the real fetch, counted
        fetches.append(self.settings.client_id)
        return real_fetch(self)

    monkeypatch.setattr(OidcClient, "fetch_keys", counted)
    with running_idp(idp.layout) as rotating:  # its own provider: the module's keeps its keys
        _rotate_and_forge(app_for(rotating, db, clock, tmp_path).test_client(), rotating, fetches)


def _rotate_and_forge(c, idp: Idp, fetches: list[str]) -> None:
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    old = token_for(idp, "alice", "alice-password")["access_token"]
    assert c.get("/api/me", headers={"Authorization": f"Bearer {old}"}).status_code == 200
    before = len(fetches)

    kid = idp.rotate(retire=True)  # the old key is withdrawn, as after a compromise
    new = token_for(idp, "alice", "alice-password")["access_token"]
    assert json.loads(base64.urlsafe_b64decode(new.split(".")[0] + "=="))["kid"] == kid
    r = c.get("/api/me", headers={"Authorization": f"Bearer {new}"})
    assert r.status_code == 200 and r.get_json()["username"] == "alice"
    assert len(fetches) == before + 1
    # the withdrawn key is no longer in visa's cache: its tokens are refused from now on
    r = c.get("/api/me", headers={"Authorization": f"Bearer {old}"})
    assert r.status_code == 401 and r.get_json()["error"] == "unauthorized"

    # Tokens naming made-up key ids (of our issuer): refused, and the keys are not fetched for each.
    claims = json.loads(base64.urlsafe_b64decode(new.split(".")[1] + "=="))
    for n in range(5):
        key = RSAKey.generate_key(2048, parameters={"kid": f"made-up-{n}"})
        forged = jwt.encode({"alg": "RS256", "kid": f"made-up-{n}", "typ": "at+jwt"}, claims, key)
        assert c.get("/api/me", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    assert len(fetches) == before + 1  # within JWKS_MIN_REFETCH of the rotation's fetch: none more
    assert c.get("/api/me", headers={"Authorization": f"Bearer {new}"}).status_code == 200


def test_tokens_of_another_issuer_audience_or_expired_are_refused_and_create_nothing(oidc_app, idp, db,
                                                                                     monkeypatch) -> None:
    from visa.auth import oidc
    from visa.users.models import User

    c = oidc_app.test_client()
    idp.register("carol", "carol-password")

    def refused(token: str, reason: str) -> None:
        r = c.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, r.get_data(as_text=True)[:300]
        assert r.is_json and r.get_json() == {"error": "unauthorized", "message": reason}

    # Another provider of the same kind (the same software, the same subjects) is another issuer.
    with running_idp(idp.layout) as other:
        other.register("carol", "carol-password")
        refused(token_for(other, "carol", "carol-password")["access_token"], "token from another issuer")
        refused(token_for(other, "alice", "alice-password")["access_token"], "token from another issuer")
    refused(token_for(idp, "carol", "carol-password", "urn:other:api")["access_token"], "token for another audience")
    monkeypatch.setattr(oidc, "LEEWAY", 0)
    short = token_for(idp, "carol", "carol-password", "urn:visa:short")["access_token"]
    time.sleep(3.1)
    refused(short, "token expired")
    with db.sessionmaker() as s:
        assert s.query(User).count() == 0  # no account made for any of them
    good = token_for(idp, "carol", "carol-password")["access_token"]
    assert c.get("/api/me", headers={"Authorization": f"Bearer {good}"}).get_json()["username"] == "carol"


def test_entitlements_map_to_roles_by_value_or_pattern() -> None:
    from visa.auth.oidc import roles_from_claims
    from visa.users.models import Role

    settings = OidcSettings(issuer="https://aai.example.org/", role_claim="eduperson_entitlement", role_mapping={
        f"{VO}:admins:role=*#aai.example.org": "admin",  # any role in the subgroup admins
        f"{VO}:role=manager#aai.example.org": "STAFF",
        "urn:mace:egi.eu:group:vo.guests.eu*": "GUEST",  # the guests' VO, any group or role in it
    })

    def roles(values: Any) -> set[Role]:
        return set(roles_from_claims({"eduperson_entitlement": values}, settings))

    assert roles([f"{VO}:admins:role=member#aai.example.org"]) == {Role.ADMIN}
    assert roles([f"{VO}:admins:role=owner#aai.example.org", f"{VO}:role=manager#aai.example.org"]) == {
        Role.ADMIN, Role.STAFF}
    assert roles(["urn:mace:egi.eu:group:vo.guests.eu:role=member#aai.example.org"]) == {Role.GUEST}
    assert roles([f"{VO}:role=member#aai.example.org"]) == set()  # the VO's membership alone: nothing
    assert roles(f"{VO}:role=manager#aai.example.org") == {Role.STAFF}  # one value, as a string
    # No entry matches: no role; a pattern is matched whole, and only * is special in it.
    assert roles([f"{VO}:admins:role=member#aai.example.org.evil", f"x{VO}:role=manager#aai.example.org",
                  f"{VO}:role=manager#aai-example-org", 42, {"a": 1}]) == set()
    assert roles(None) == set() and roles({"nested": "x"}) == set()
    nested = OidcSettings(server_url="https://sso.example.org/", role_claim="resource_access.visa.roles",
                          role_mapping={"visa-admin": "ADMIN"})
    assert roles_from_claims({"resource_access": {"visa": {"roles": ["visa-admin", "x"]}}}, nested) == {Role.ADMIN}


@pytest.mark.parametrize(("settings", "message"), [
    ({"issuer": "https://a.example.org/", "server_url": "https://sso.example.org/"}, "not both"),
    ({"issuer": "https://a.example.org/", "browser_url": "https://sso.example.org/"}, "browser_url goes with server_url"),
    ({"issuer": "aai.example.org"}, "oidc.issuer: 'aai.example.org' is not an http(s) URL"),
    ({"issuer": "https://a.example.org/?x=1"}, "without query or fragment"),
    ({"role_claim": "groups", "role_mapping": {"admins": "root"}}, "'admins' maps to 'root', not a visa role"),
    ({"role_claim": "groups", "role_mapping": {"*": "ADMIN"}}, "would match every claim value"),
    ({"role_mapping": {"admins": "ADMIN"}}, "role_mapping needs oidc.role_claim"),
    ({"role_claim": "realm_access..roles"}, "oidc.role_claim: 'realm_access..roles' is not a claim name"),
])
def test_provider_settings_are_checked_with_clear_errors(settings: dict[str, Any], message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=re.escape(message)):
        OidcSettings(**settings)


def test_check_config_reads_the_providers_discovery_and_keys(idp, tmp_path: Path) -> None:
    from visa.checks import check_identity_provider

    settings = Settings(data_dir=tmp_path, oidc=OidcSettings(**idp.provider_settings(), client_secret="visa-secret"))
    findings = check_identity_provider(settings)
    assert [(f.level, f.subject) for f in findings] == [("ok", "oidc discovery")], findings
    assert f"issuer {idp.issuer}, 1 signing key(s)" in findings[0].message


def test_a_provider_that_cannot_be_reached_is_said_so(db, clock, tmp_path: Path) -> None:
    """Nobody answers at the issuer: the login page says so (503), a bearer token is refused
    with the reason (401), and nothing is created."""
    from tests.processes import free_port
    from visa.users.models import User
    from visa.web.app import create_app

    settings = Settings(data_dir=tmp_path / "data", database_url=db.url, secret_key="test-secret-key", base_url=BASE,
                        oidc=OidcSettings(issuer=f"http://127.0.0.1:{free_port()}/", client_secret="visa-secret"))
    app = create_app(settings, database=db, clock=clock)
    app.config["TESTING"] = True
    c = app.test_client()
    r = c.get("/login/oidc?next=/instances")
    assert r.status_code == 503
    assert "The identity provider cannot be reached: please try again later." in r.get_data(as_text=True)
    header = base64.urlsafe_b64encode(b'{"alg":"RS256","kid":"k"}').rstrip(b"=").decode()
    claims = base64.urlsafe_b64encode(json.dumps({"iss": settings.oidc.issuer, "sub": "x"}).encode()).rstrip(b"=")
    r = c.get("/api/me", headers={"Authorization": f"Bearer {header}.{claims.decode()}.c2ln"})
    assert r.status_code == 401 and r.get_json()["message"] == "the identity provider is unavailable"
    with db.sessionmaker() as s:
        assert s.query(User).count() == 0


def test_entitlements_given_at_the_userinfo_endpoint_only_count(db, clock, tmp_path: Path) -> None:
    """A federation proxy that issues opaque access tokens and gives the entitlements at its
    userinfo endpoint only: they map to roles at login, and at each refresh."""
    with running_idp("plain", OIDC_USERINFO_ONLY="1") as proxy:
        tokens = token_for(proxy, "sam", "sam-password", resource="")
        assert tokens["access_token"].count(".") != 2  # opaque
        id_claims = json.loads(base64.urlsafe_b64decode(tokens["id_token"].split(".")[1] + "=="))
        assert "eduperson_entitlement" not in id_claims
        app = app_for(proxy, db, clock, tmp_path)
        admin, _ = browser_login(app, "sam", "sam-password")
        me = admin.get("/api/me").get_json()
        assert (me["username"], me["full_name"], me["roles"]) == ("sam", "Sam Staff", ["ADMIN"])  # all from userinfo
        _set_roles(proxy, "sam", ["visa-staff"])  # the admins' group left at the proxy
        clock.advance(seconds=app.extensions["visa"].settings.oidc.refresh_seconds)
        assert admin.get("/api/me").get_json()["roles"] == []
