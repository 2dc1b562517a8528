"""Cookies served over HTTPS carry the ``__Host-`` prefix: the browser then takes them only
host-only, Secure and for Path=/, so a sibling host of the same site (an instance's web content
on a content domain that shares visa's registrable domain, a compromised neighbour) cannot
plant one that shadows visa's (cookie tossing)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from a2wsgi import WSGIMiddleware
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from tests.gateway.conftest import GATEWAY_CONFIG, PASSWORD, UID, Jupyter, jupyter, make_world
from visa.gateway.routes import gateway_routes
from visa.settings import Settings
from visa.web.app import create_app

__all__ = ["jupyter"]  # the real JupyterLab fixture

VISA = "https://visa.example.org"
CONTENT = "visa-content.example.net"


def _attributes(set_cookie: str) -> list[str]:
    return [a.strip().lower() for a in set_cookie.split(";")[1:]]


@pytest.fixture
def https_site(tmp_path, committed_db, clock) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", database_url=committed_db.url, secret_key="test-secret-key",
                        base_url=VISA, user_content_domain=CONTENT, session_cookie_secure=True)
    app = create_app(settings, database=committed_db, clock=clock)
    asgi = Starlette(routes=[*gateway_routes(app, GATEWAY_CONFIG), Mount("/", app=WSGIMiddleware(app, workers=2))])
    with TestClient(asgi, base_url=VISA) as client:
        yield client


def test_https_cookies_are_host_prefixed(https_site: TestClient, jupyter: Jupyter, committed_db, clock) -> None:
    make_world(committed_db, clock, jupyter_port=jupyter.port)
    r = https_site.post("/api/login", json={"username": "owner", "password": PASSWORD})
    assert r.status_code == 200, r.text
    session_cookie = r.headers["set-cookie"]
    assert session_cookie.startswith("__Host-visa_session="), session_cookie
    assert {"secure", "path=/"} <= set(_attributes(session_cookie))
    assert not any(a.startswith("domain") for a in _attributes(session_cookie))
    assert https_site.get("/api/me").json()["username"] == "owner"  # and read back under that name
    spec = https_site.get("/api/openapi.json").json()
    assert spec["components"]["securitySchemes"]["session"]["name"] == "__Host-visa_session"

    r = https_site.get(f"/jupyter/{UID}/lab", follow_redirects=False)
    assert r.status_code == 303, r.text
    link = urlsplit(r.headers["location"])
    assert link.netloc == f"{UID}.{CONTENT}"
    lab = TestClient(https_site.app, base_url=f"https://{link.netloc}")
    r = lab.get(f"{link.path}?{link.query}", follow_redirects=False)
    assert r.status_code == 303, r.text
    lab_cookie = r.headers["set-cookie"]
    assert lab_cookie.startswith("__Host-visa_lab="), lab_cookie
    assert {"secure", "path=/", "httponly"} <= set(_attributes(lab_cookie))
    # The gateway knows its cookie by that name.
    assert lab.get(f"/jupyter/{UID}/api/status").status_code == 200
    lab.cookies.clear()
    assert lab.get(f"/jupyter/{UID}/api/status").status_code in (401, 403)


def test_plain_http_keeps_the_plain_names(app, api_client, db, clock) -> None:
    make_world(db, clock)
    r = api_client().client.post("/api/login", json={"username": "owner", "password": PASSWORD})
    assert r.headers["set-cookie"].startswith("visa_session=")  # a __Host- cookie needs https
