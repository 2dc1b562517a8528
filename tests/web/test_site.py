"""The facility's face (settings ``site``): name, logo, colours and contact on every page, each
value checked when the settings are read."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.factories import make_user
from visa.checks import check_face
from visa.db import Database
from visa.settings import Settings, SiteSettings
from visa.web.app import create_app

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6300010000"
                    "0500010d0a2db40000000049454e44ae426082")


def _client(settings: Settings, db: Database, clock, site: SiteSettings):
    app = create_app(settings.model_copy(update={"site": site}), database=db, clock=clock)
    app.config["TESTING"] = True
    return app.test_client()


def test_pages_wear_the_facility_s_face(settings: Settings, db: Database, clock, tmp_path: Path) -> None:
    logo = tmp_path / "logo.png"
    logo.write_bytes(PNG)
    site = SiteSettings(name="ESRF <VISA>", tagline="", logo=str(logo), logo_alt="ESRF", brand_colour="#ABCDEF",
                        accent_colour="#123", contact_email="visa@esrf.example")
    with db.unit_of_work() as s:
        make_user(s, clock, "alice", password="alice-pw")
    client = _client(settings, db, clock, site)
    login = client.get("/login").get_data(as_text=True)
    assert "<title>Log in · ESRF &lt;VISA&gt;</title>" in login and "Log in to ESRF &lt;VISA&gt;" in login
    assert '<img class="logo" src="/site/logo" alt="ESRF">' in login
    assert '<link rel="stylesheet" href="/site.css">' in login
    assert client.post("/api/login", json={"username": "alice", "password": "alice-pw"}).status_code == 200
    home = client.get("/").get_data(as_text=True)
    assert 'href="mailto:visa@esrf.example"' in home and '<img class="logo" src="/site/logo"' in home
    css = client.get("/site.css")
    assert css.mimetype == "text/css"
    assert css.get_data(as_text=True) == ":root { --brand: #abcdef; --accent: #123; }\n"
    served = client.get("/site/logo")
    assert served.status_code == 200 and served.mimetype == "image/png" and served.data == PNG
    # Opened on its own, a logo (an SVG could hold scripts) runs nothing on visa's origin.
    assert "sandbox" in served.headers["Content-Security-Policy"]


def test_a_logo_from_the_facility_s_site_is_allowed_by_the_policy(settings: Settings, db: Database, clock) -> None:
    client = _client(settings, db, clock, SiteSettings(logo="https://www.esrf.example/logo.svg"))
    page = client.get("/login")
    assert 'src="https://www.esrf.example/logo.svg"' in page.get_data(as_text=True)
    assert "img-src 'self' data: blob: https://www.esrf.example;" in page.headers["Content-Security-Policy"]
    assert client.get("/site/logo").status_code == 404


def test_the_default_face(settings: Settings, db: Database, clock) -> None:
    client = _client(settings, db, clock, SiteSettings())
    page = client.get("/login").get_data(as_text=True)
    assert '<a class="brand" href="/">VISA<small>remote analysis</small></a>' in page
    assert "mailto:" not in page
    assert client.get("/site.css").get_data(as_text=True) == ":root { --brand: #1f4e79; --accent: #2f6fb0; }\n"


@pytest.mark.parametrize(("values", "field", "message"), [
    ({"brand_colour": "red"}, "site.brand_colour", "is not a colour"),
    ({"accent_colour": "#12345"}, "site.accent_colour", "is not a colour"),
    ({"brand_colour": "#123456; background: url(x)"}, "site.brand_colour", "is not a colour"),
    ({"logo": "logo.png"}, "site.logo", "absolute path"),
    ({"logo": "/etc/passwd"}, "site.logo", "must end in one of"),
    ({"logo": "http://www.esrf.example/logo.png"}, "site.logo", "https://"),
    ({"logo": "javascript:alert(1)//x.png"}, "site.logo", "absolute path"),
    ({"contact_email": "not an address"}, "site.contact_email", "pattern"),
    ({"name": ""}, "site.name", "at least 1"),
])
def test_bad_values_are_refused_with_the_field_named(values: dict, field: str, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        Settings(site=values)
    [error] = err.value.errors()
    assert ".".join(str(p) for p in error["loc"]) == field
    assert message in error["msg"]


def test_check_config_finds_a_missing_logo(tmp_path: Path) -> None:
    found = check_face(Settings(site={"logo": str(tmp_path / "nope.png")}))
    assert [(f.level, f.subject) for f in found] == [("error", "site.logo")]
    assert "nope.png: no such readable file" in found[0].message


def test_check_config_warns_of_colours_white_text_is_hard_to_read_on() -> None:
    assert check_face(Settings()) == []  # visa's own colours pass
    found = check_face(Settings(site={"brand_colour": "#ffcc00", "accent_colour": "#0b3d6e"}))
    assert [(f.level, f.subject) for f in found] == [("warning", "site.brand_colour")]
    assert "contrast of 1.5:1, below WCAG AA's 4.5:1" in found[0].message
