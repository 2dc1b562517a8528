"""/help: visa's user guide by default, or the facility's Markdown files (``help.dir``), rendered
with no raw HTML and no link but http, https, mailto or within the site; linked from every page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.factories import make_user
from visa.checks import check_face
from visa.db import Database
from visa.help.content import GUIDE, HelpError, load_pages
from visa.settings import Settings
from visa.states import InstanceState
from visa.web.app import create_app


def _client(settings: Settings, db: Database, clock, **changes: object):
    app = create_app(settings.model_copy(update=changes), database=db, clock=clock)
    app.config["TESTING"] = True
    return app.test_client()


def test_the_user_guide_is_served_to_everyone(settings: Settings, db: Database, clock) -> None:
    client = _client(settings, db, clock)
    assert client.get("/help").headers["Location"].endswith("/help/")
    index = client.get("/help/")
    assert index.status_code == 200  # anonymous: the login page links it
    html = index.get_data(as_text=True)
    for slug in ("create", "sharing", "files", "more-time", "states"):
        assert f'href="/help/{slug}"' in html  # in the help's menu
        assert f'href="{slug}"' in html  # the index's own links to its pages, by their addresses
        assert client.get(f"/help/{slug}").status_code == 200
    assert client.get("/help/nope").status_code == 404
    assert client.get("/help/..%2Fsettings").status_code == 404


def test_the_guide_says_what_every_state_means() -> None:
    text = (GUIDE / "states.md").read_text()
    for state in InstanceState:
        assert f"**{state.value.replace('_', ' ').capitalize()}**" in text, state


def test_every_page_links_the_help(settings: Settings, db: Database, clock) -> None:
    with db.unit_of_work() as s:
        make_user(s, clock, "alice", password="alice-pw")
    client = _client(settings, db, clock)
    assert 'href="/help"' in client.get("/login").get_data(as_text=True)
    assert client.post("/api/login", json={"username": "alice", "password": "alice-pw"}).status_code == 200
    for path in ("/", "/instances/new", "/help/"):
        assert 'href="/help"' in client.get(path).get_data(as_text=True), path


HOSTILE = """# Our facility

<script>alert('raw')</script>
<img src=x onerror=alert(1)>
[js](javascript:alert(1)) [data](data:text/html,hi) [vb](VBScript:msgbox) [far](//evil.example/x)
[ok](https://www.example.org/a?b=1&c=<d>) [mail](mailto:help@example.org) [page](beamtime.md#before)
[site](/instances/new)
"""


def test_a_facility_s_pages_are_rendered_safely(settings: Settings, db: Database, clock, tmp_path: Path) -> None:
    pages = tmp_path / "help"
    pages.mkdir()
    (pages / "index.md").write_text(HOSTILE)
    (pages / "beamtime.md").write_text("# Before your beamtime\n\nBring your data.\n")
    client = _client(settings, db, clock, help=settings.help.model_copy(update={"dir": pages}))
    html = client.get("/help/").get_data(as_text=True)
    body = html.split('data-testid="help-page">', 1)[1].split("</article>", 1)[0]
    assert "<script" not in body and "<img" not in body
    assert "&lt;script&gt;" in body and "&lt;img src=x onerror=alert(1)&gt;" in body  # shown as text
    hrefs = re.findall(r'href="([^"]*)"', body)
    assert hrefs == ["https://www.example.org/a?b=1&amp;c=%3Cd%3E", "mailto:help@example.org", "beamtime#before",
                     "/instances/new"]
    assert 'rel="noopener noreferrer"' in body
    assert "Before your beamtime" in client.get("/help/beamtime").get_data(as_text=True)
    assert "Our facility" in html.split("<nav", 2)[2]  # the page's title in the help's menu


def test_a_help_directory_that_cannot_be_served_is_named(settings: Settings, tmp_path: Path) -> None:
    pages = tmp_path / "help"
    pages.mkdir()
    (pages / "about.md").write_text("# About\n")
    with pytest.raises(HelpError, match=r"help: no index.md"):
        load_pages(pages)
    (pages / "index.md").write_text("# Home\n")
    (pages / "Read Me.md").write_text("x")
    with pytest.raises(HelpError, match=r"Read Me.md: a page's file name"):
        load_pages(pages)
    found = check_face(settings.model_copy(update={"help": settings.help.model_copy(update={"dir": pages})}))
    assert [(f.level, f.subject) for f in found] == [("error", "help.dir")]
    assert "Read Me.md" in found[0].message
