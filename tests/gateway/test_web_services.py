"""A web service an image declares, served like JupyterLab: on a user-content host of its own
(``<uid>-<name>``), the owner's only, through visa's one-time link; no credential of visa's
reaches the machine and none of the machine's cookies reaches visa's host."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from sqlalchemy import select

from tests.browser import allow_errors, chromium, require_chromium
from tests.gateway.conftest import OTHER_UID, PASSWORD, SECRET, UID, Live, World, make_world
from visa.catalogue.models import Image
from visa.users.models import User

pytestmark = pytest.mark.timeout(120)
NAME = "dash"
HOST_LABEL = f"{UID}-{NAME}"


ATTACK = """<script>
const visa = decodeURIComponent(location.hash.slice(1));
fetch(visa + "/api/me", {credentials: "include"})
  .then(r => r.text()).then(t => { window.__attack = "read: " + t; }, () => { window.__attack = "blocked"; });
</script>"""


class Service(ThreadingHTTPServer):
    """A real small web server standing for the image's service; it records what reaches it."""

    seen: list[tuple[str, dict[str, str]]]


class _Handler(BaseHTTPRequestHandler):
    server: Service

    def _answer(self) -> None:
        self.server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        body = f"<p id=hello>hello from the service at {self.path}</p>".encode()
        if self.path.startswith("/attack"):  # reads visa with the owner's browser (visa's base after #)
            body += ATTACK.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        if self.path.startswith("/cookies"):  # what a hostile service would like the browser to keep
            for cookie in ("grab=1; Path=/; Domain=instances.localhost", "visa_session=forged; Path=/",
                           "visa_lab=forged; Path=/", "own=1; Path=/; HttpOnly"):
                self.send_header("Set-Cookie", cookie)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def web() -> Iterator[Service]:
    server = Service(("127.0.0.1", 0), _Handler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def world(live: Live, web: Service) -> World:
    made = make_world(live.db, live.clock)
    with live.db.unit_of_work() as s:  # the image declares the service on the test server's port
        image = s.scalar(select(Image).where(Image.name == "desktop"))
        image.web_services = [{"name": NAME, "port": web.server_address[1]}]
    web.seen.clear()
    return made


def _host(live: Live, label: str = HOST_LABEL) -> str:
    return live.content(label)


@contextlib.contextmanager
def _open(live: Live, client: httpx.Client, path: str = "/") -> Iterator[httpx.Client]:
    """visa's way to the service: its one-time link spent on the service's own host."""
    r = client.get(f"/services/{UID}/{NAME}{path}")
    assert r.status_code == 303, r.text
    link = urlsplit(r.headers["location"])
    assert f"{link.scheme}://{link.netloc}" == f"http://{_host(live)}" and link.path == "/_visa/login"
    with live.http(headers={"Host": _host(live)}) as service:
        answer = service.get(f"{link.path}?{link.query}")
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == path
        cookie = answer.headers["set-cookie"]
        assert "httponly" in cookie.lower() and "domain" not in cookie.lower()
        yield service


def test_owner_reaches_the_service_on_its_own_host(live: Live, world: World, web: Service) -> None:
    with live.login("owner") as client:
        r = client.get(f"/services/{UID}/{NAME}/page?x=1")
        assert parse_qs(urlsplit(r.headers["location"]).query)["next"] == ["/page?x=1"]
        with _open(live, client, "/page?x=1") as service:
            r = service.get("/page?x=1")
            assert r.status_code == 200 and "hello from the service at /page?x=1" in r.text
            assert "frame-ancestors 'self'" in r.headers.get_list("content-security-policy")
        # The instance page links to it.
        page = client.get(f"/instances/{UID}", headers={"Accept": "text/html"})
        assert f'href="/services/{UID}/{NAME}/"' in page.text
    assert web.seen[-1][0] == "/page?x=1"


def test_others_are_refused_and_learn_nothing(live: Live, world: World, web: Service) -> None:
    for who in ("stranger", "guest", "helper"):  # members who are not the owner too
        with live.login(who) as client:
            assert client.get(f"/services/{UID}/{NAME}/").status_code == 404
            page = client.get(f"/instances/{UID}", headers={"Accept": "text/html"})
            assert f"/services/{UID}/" not in page.text
    with live.login("owner") as client:
        assert client.get(f"/services/{UID}/nosuch/").status_code == 404  # not declared
        assert client.get(f"/services/{OTHER_UID}/{NAME}/").status_code == 404  # not the owner's
    with live.http(headers={"Host": _host(live)}) as anonymous:
        assert anonymous.get("/").status_code == 401
        page = anonymous.get("/x", headers={"Accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"] == f"{live.base}/services/{UID}/{NAME}/x"
        anonymous.cookies.set("visa_lab", "forged.cookie.value")
        assert anonymous.get("/").status_code == 401
    assert web.seen == []


def test_cookies_open_only_their_own_host(live: Live, world: World) -> None:
    with live.login("owner") as client, live.open_lab(client) as lab, _open(live, client) as service:
        assert service.get("/").status_code == 200
        # JupyterLab's cookie opens no service, the service's cookie no JupyterLab nor another host.
        assert lab.get("/", headers={"Host": _host(live)}).status_code == 401
        assert service.get(f"/jupyter/{UID}/api/status", headers={"Host": live.content()}).status_code == 401
        assert service.get("/", headers={"Host": _host(live, f"{UID}-other")}).status_code == 401
        assert service.get("/", headers={"Host": _host(live, f"{OTHER_UID}-{NAME}")}).status_code == 401
        # A link is spent once, on its own host only.
        link = httpx.URL(client.get(f"/services/{UID}/{NAME}/").headers["location"]).raw_path.decode()
        with live.http(headers={"Host": live.content()}) as jupyter_host:
            assert jupyter_host.get(link).status_code == 401
        with live.http(headers={"Host": _host(live)}) as fresh:
            assert fresh.get(link).status_code == 303
            assert fresh.get(link).status_code == 401


def test_no_visa_cookie_nor_secret_reaches_the_machine(live: Live, world: World, web: Service) -> None:
    with live.login("owner") as client, _open(live, client) as service:
        service.cookies.update(client.cookies)  # even with visa's own cookie
        service.cookies.set("mine", "1")
        assert service.get("/", headers={"Authorization": "Bearer visa-token"}).status_code == 200
    path, headers = web.seen[-1]
    assert headers.get("cookie") == "mine=1"
    assert "authorization" not in headers
    assert SECRET not in str(headers) and "visa_session" not in str(headers) and "visa_lab" not in str(headers)


def test_the_services_cookies_cannot_reach_visas_host(live: Live, world: World) -> None:
    with live.login("owner") as client, _open(live, client) as service:
        r = service.get("/cookies")
        assert r.status_code == 200
        assert r.headers.get_list("set-cookie") == ["own=1; Path=/; HttpOnly"]


def test_a_logout_ends_the_service(live: Live, world: World) -> None:
    with live.login("owner") as client, _open(live, client) as service:
        assert service.get("/").status_code == 200
        with live.db.unit_of_work() as s:
            s.get(User, world.owner.id).password_hash = "changed" * 4  # sessions die with the password
        assert service.get("/").status_code == 401


@pytest.mark.integration
def test_the_owner_opens_it_from_the_instance_page_in_chromium(live: Live, world: World) -> None:
    """Through the instance page's link, in a real browser: the service's page on its own
    origin, and a script of the service that cannot read visa with the owner's browser."""
    require_chromium()
    with chromium() as browser:
        page = browser.new_page()
        page.set_default_timeout(30_000)
        # This harness serves the gateway and Flask only (no event stream) and its instance has
        # no SSH to list files: those calls of the pages fail here, and only those.
        allow_errors(r"404 .*\(http://127\.0\.0\.1:\d+/api/events\)",
                     rf"502 .*\(http://127\.0\.0\.1:\d+/api/instances/{UID}/files\?\)")
        page.goto(f"{live.base}/login")
        page.fill("#username", "owner")
        page.fill("#password", PASSWORD)
        page.click("#login-form button[type=submit]")
        page.wait_for_url(f"{live.base}/")
        page.goto(f"{live.base}/instances/{UID}")
        page.click("[data-testid=open-web-service]")
        page.wait_for_url(f"http://{_host(live)}/")
        assert page.text_content("#hello") == "hello from the service at /"
        allow_errors(r"CORS policy", r"Failed to load resource", r"net::ERR_FAILED")
        page.goto(f"http://{_host(live)}/attack#{quote(live.base, safe='')}")
        page.wait_for_function("() => window.__attack !== undefined")
        assert page.evaluate("window.__attack") == "blocked"
