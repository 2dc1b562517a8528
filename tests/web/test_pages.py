"""The pages on both databases (Flask test client): login redirects, the list, the wizard,
progress from state and commands, who sees which actions, thumbnails, the event stream."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from tests.factories import actor, make_cloud, make_experiment, make_flavour, make_image, make_plan, make_user
from visa.catalogue.models import Protocol
from visa.db import Database
from visa.instances import service
from visa.instances.models import (
    CommandState,
    Instance,
    InstanceCommand,
    InstanceMember,
    InstanceState,
    InstanceThumbnail,
    MemberRole,
)
from visa.instances.schemas import CreateInstance
from visa.users.models import Role, User

JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + bytes(200) + b"\xff\xd9"


@pytest.fixture
def world(db: Database, clock, settings):
    """alice owns one instance (BUILDING) on experiment ev280; bob is a guest on it; carol is a stranger."""
    with db.unit_of_work() as s:
        make_cloud(s, clock)
        alice = make_user(s, clock, "alice", full_name="Alice Martin", password="alice-pw")
        bob = make_user(s, clock, "bob", full_name="Bob Guest", password="bob-pw")
        make_user(s, clock, "carol", password="carol-pw")
        make_user(s, clock, "sam", password="sam-pw", roles=(Role.STAFF,))
        exp = make_experiment(s, members=[alice], proposal="ev280", instrument="id21")
        make_experiment(s, members=[alice], proposal="ma9012", instrument="id16a")
        image = make_image(s, "desktop", {Protocol.VNC: 5901, Protocol.JUPYTER: 8888})
        plan = make_plan(s, image, make_flavour(s, "esrf.medium"), preset=True)
        inst = service.create_instance(
            actor(alice, clock), s, clock, settings,
            CreateInstance(name="tomo reconstruction", plan_id=plan.id, experiment_ids=[exp.id], own_home=True),
        )
        inst.members.append(InstanceMember(user=bob, role=MemberRole.GUEST, created_at=clock.now()))
        return SimpleNamespace(uid=inst.uid, plan_id=plan.id, exp_id=exp.id)


def _set(db: Database, uid: str, state: InstanceState, command: CommandState | None = None, error: str | None = None) -> None:
    with db.unit_of_work() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == uid))
        inst.state = state
        inst.error_message = error
        if command:
            for cmd in s.scalars(select(InstanceCommand).where(InstanceCommand.instance_id == inst.id)):
                cmd.state = command
                cmd.finished_at = cmd.created_at + timedelta(seconds=3)
                cmd.message = error


def _logged_in(api_client, who: str):
    c = api_client()
    assert c.login(who, f"{who}-pw").status_code == 200
    return c


def _steps(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-step="(\w+)" data-status="(\w+)"', html))


def test_anonymous_visitors_are_sent_to_login_and_back(world, api_client) -> None:
    c = api_client()
    for path, nxt in [("/", "/"), ("/instances/new", "/instances/new"), (f"/instances/{world.uid}/desktop?x=1", f"/instances/{world.uid}/desktop?x=1")]:
        r = c.get(path)
        assert r.status_code == 302, path
        assert r.headers["Location"].startswith("/login?next="), r.headers["Location"]
        from urllib.parse import parse_qs, urlsplit

        assert parse_qs(urlsplit(r.headers["Location"]).query)["next"] == [nxt]
    assert c.get("/instances/_cards").status_code == 401
    assert c.get(f"/api/instances/{world.uid}/thumbnail").status_code == 401


def test_home_lists_instances_with_state_lifetime_and_csrf(world, api_client) -> None:
    c = _logged_in(api_client, "alice")
    r = c.get("/")
    html = r.get_data(as_text=True)
    assert r.status_code == 200
    assert f'<meta name="csrf-token" content="{c.csrf}">' in html
    assert "tomo reconstruction" in html and 'data-state="BUILDING"' in html
    assert "ev280 · id21" in html
    assert re.search(r'data-seconds-left="\d+"[^>]*>13 d 23 h|data-seconds-left="\d+"[^>]*>14 d 0 h', html)
    # The security policy forbids inline code: every script is a file, no inline styles or handlers.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert not re.search(r"\sstyle=|\son[a-z]+=", html)
    # The fragment the page refreshes on events has the same cards.
    cards = c.get("/instances/_cards").get_data(as_text=True)
    assert f'data-uid="{world.uid}"' in cards and "<html" not in cards

    empty = _logged_in(api_client, "carol").get("/").get_data(as_text=True)
    assert 'data-testid="no-instances"' in empty


def test_announcements_show_on_pages_until_dismissed(world, db, clock, api_client) -> None:
    from visa.announcements import service as notifications
    from visa.announcements.models import NotificationKind, NotificationLevel

    with db.unit_of_work() as s:
        admin = make_user(s, clock, "root", roles=(Role.ADMIN,))
        banner = notifications.create(actor(admin, clock), s, clock, message="Maintenance <b>Monday</b> 8:00",
                                      level=NotificationLevel.WARNING, kind=NotificationKind.BANNER).id
        modal = notifications.create(actor(admin, clock), s, clock, message="New GPU flavours",
                                     level=NotificationLevel.INFO, kind=NotificationKind.MODAL).id
        notifications.create(actor(admin, clock), s, clock, message="Not yet", level=NotificationLevel.INFO,
                             kind=NotificationKind.BANNER, active_from=clock.now() + timedelta(days=1))
    c = _logged_in(api_client, "alice")
    html = c.get("/").get_data(as_text=True)
    assert f'class="notice warning" role="status" data-notice="{banner}"' in html
    assert "Maintenance &lt;b&gt;Monday&lt;/b&gt; 8:00" in html  # the message is text, never markup
    assert f'data-notice="{modal}" data-modal-notice' in html and "Not yet" not in html
    assert c.post(f"/api/notifications/{banner}/ack").status_code == 200
    html = c.get("/instances/new").get_data(as_text=True)
    assert f'data-notice="{banner}"' not in html and f'data-notice="{modal}"' in html
    # Dismissed by alice only; the login page shows nothing to anonymous visitors.
    assert f'data-notice="{banner}"' in _logged_in(api_client, "bob").get("/").get_data(as_text=True)
    assert "data-notice" not in api_client().get("/login").get_data(as_text=True)


def test_create_wizard_offers_experiments_and_no_experiment_only_to_allowed_roles(world, api_client) -> None:
    html = _logged_in(api_client, "alice").get("/instances/new").get_data(as_text=True)
    assert html.count("data-experiment=") == 2
    assert '<option value="id16a">' in html and '<option value="id21">' in html
    assert re.search(r'<option value="20\d\d">', html)
    assert "Not associated to any experiment" not in html
    assert 'data-testid="quota-full"' not in html

    staff = _logged_in(api_client, "sam").get("/instances/new").get_data(as_text=True)
    assert "Not associated to any experiment" in staff
    assert "data-experiment=" not in staff


def test_wizard_offers_open_data_and_pages_mark_it_read_only(world, db, clock, settings, api_client) -> None:
    c = _logged_in(api_client, "alice")
    html = c.get("/instances/new").get_data(as_text=True)
    # The section the script fills from /api/experiments/open-data; no inline code (CSP).
    assert 'id="step-open-data"' in html and 'id="open-search"' in html and 'id="open-list"' in html
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert not re.search(r"\sstyle=|\son[a-z]+=", html)
    assert "Open data" not in c.get(f"/instances/{world.uid}").get_data(as_text=True)

    with db.unit_of_work() as s:
        public = make_experiment(s, members=[], proposal="hc4321", instrument="id11",
                                 public_at=clock.now() - timedelta(days=30))
        alice = s.scalar(select(Instance).where(Instance.uid == world.uid)).owner
        uid = service.create_instance(
            actor(alice, clock), s, clock, settings,
            CreateInstance(name="open look", plan_id=world.plan_id, experiment_ids=[world.exp_id],
                           open_data_ids=[public.id]),
        ).uid
        make_user(s, clock, "root", password="root-pw", roles=(Role.ADMIN,))
    page = c.get(f"/instances/{uid}").get_data(as_text=True)
    assert re.search(r'data-testid="open-data"><span class="spec">hc4321 · id11</span>', page)
    assert "open data, read-only" in page
    assert "hc4321 · id11 <span class=\"muted small\">(read-only)</span>" in c.get("/instances/_cards").get_data(as_text=True)
    admin = _logged_in(api_client, "root").get(f"/admin/instances/{uid}").get_data(as_text=True)
    assert "Open data (read-only)" in admin and "<td>hc4321</td>" in admin


def test_progress_steps_follow_state_and_commands(world, db, api_client) -> None:
    c = _logged_in(api_client, "alice")
    page = lambda: c.get(f"/instances/{world.uid}").get_data(as_text=True)  # noqa: E731
    assert _steps(page()) == {"requested": "done", "cloud": "current", "booting": "todo", "service": "todo", "ready": "todo"}

    _set(db, world.uid, InstanceState.BUILDING, CommandState.DONE)
    assert _steps(page())["booting"] == "current"
    _set(db, world.uid, InstanceState.STARTING, CommandState.DONE)
    assert _steps(page()) == {"requested": "done", "cloud": "done", "booting": "current", "service": "todo", "ready": "todo"}
    _set(db, world.uid, InstanceState.PARTIALLY_ACTIVE, CommandState.DONE)
    assert _steps(page())["ready"] == "current"
    _set(db, world.uid, InstanceState.ACTIVE, CommandState.DONE)
    html = page()
    assert set(_steps(html).values()) == {"done"}
    assert f'href="/instances/{world.uid}/desktop"' in html and f'href="/instances/{world.uid}/jupyter"' in html
    assert 'data-action="stop"' in html and 'data-action="delete"' in html and 'data-action="start"' not in html
    assert "Desktop answering" in html

    _set(db, world.uid, InstanceState.ERROR, CommandState.FAILED, error="no valid host was found")
    html = c.get(f"/instances/{world.uid}/_status").get_data(as_text=True)
    assert _steps(html)["cloud"] == "failed" and "no valid host was found" in html
    assert "<html" not in html

    _set(db, world.uid, InstanceState.STOPPED, CommandState.DONE)
    html = page()
    assert 'data-testid="progress"' not in html and 'data-action="start"' in html


def test_members_see_what_their_role_allows_and_strangers_nothing(world, db, api_client) -> None:
    _set(db, world.uid, InstanceState.ACTIVE, CommandState.DONE)
    bob = _logged_in(api_client, "bob")
    html = bob.get("/").get_data(as_text=True)
    assert "tomo reconstruction" in html and "Alice Martin" in html and ">guest<" in html
    page = bob.get(f"/instances/{world.uid}").get_data(as_text=True)
    assert 'data-testid="my-role"' in page
    assert "open-desktop" in page and "open-jupyter" not in page  # Jupyter is the owner's only
    for action in ("stop", "reboot", "delete", "revoke"):
        assert f'data-action="{action}"' not in page
    assert 'id="invite"' not in page and 'id="extension-form"' not in page
    desktop = bob.get(f"/instances/{world.uid}/desktop").get_data(as_text=True)
    assert 'data-role="GUEST"' in desktop and 'data-input="false"' in desktop
    assert bob.get(f"/instances/{world.uid}/jupyter").status_code == 403

    owner = _logged_in(api_client, "alice").get(f"/instances/{world.uid}").get_data(as_text=True)
    assert 'id="invite"' in owner and 'id="extension-form"' in owner and 'data-username="bob"' in owner
    lab = _logged_in(api_client, "alice").get(f"/instances/{world.uid}/jupyter")
    assert lab.status_code == 303 and lab.headers["location"] == f"/jupyter/{world.uid}/lab"  # its own tab

    carol = _logged_in(api_client, "carol")
    for path in (f"/instances/{world.uid}", f"/instances/{world.uid}/desktop", f"/instances/{world.uid}/_status"):
        r = carol.get(path)
        assert r.status_code == 404 and "tomo" not in r.get_data(as_text=True), path


def test_thumbnail_written_by_the_owner_read_by_members(world, db, api_client) -> None:
    url = f"/api/instances/{world.uid}/thumbnail"
    alice, bob, carol = (_logged_in(api_client, u) for u in ("alice", "bob", "carol"))
    assert bob.get(url).status_code == 404
    jpeg = {"data": JPEG, "content_type": "image/jpeg"}
    assert alice.client.put(url, **jpeg).status_code == 403  # no CSRF header
    r = alice.put(url, **jpeg)
    assert r.status_code == 200 and r.get_json()["bytes"] == len(JPEG)
    got = bob.get(url)
    assert got.status_code == 200 and got.data == JPEG and got.mimetype == "image/jpeg"
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert bob.get(url, headers={"If-None-Match": got.headers["ETag"]}).status_code == 304
    assert bob.put(url, **jpeg).status_code == 403  # a guest's view must not replace the owner's
    assert carol.put(url, **jpeg).status_code == 404 and carol.get(url).status_code == 404

    for bad in (b"<svg onload=alert(1)>" + bytes(100), b"\x89PNG\r\n\x1a\n" + bytes(100), JPEG[:-2] + bytes(1)):
        r = alice.put(url, data=bad, content_type="image/jpeg")
        assert r.status_code == 400 and r.get_json()["error"] == "invalid_input"
    big = JPEG[:-2] + bytes(200 * 1024) + b"\xff\xd9"
    assert alice.put(url, data=big, content_type="image/jpeg").status_code == 400
    with db.sessionmaker() as s:
        assert s.scalar(select(InstanceThumbnail.image)) == JPEG
    # The list shows it, with a cache-busting version.
    assert re.search(rf'src="{url}\?v=\d+"', bob.get("/").get_data(as_text=True))


def test_event_stream_pushes_state_list_and_thumbnail_changes(world, db, app, clock, api_client, monkeypatch) -> None:
    from visa.web import events

    monkeypatch.setattr(events, "POLL_SECONDS", 0.02)
    stream = events.EventStream(app)
    alice = _logged_in(api_client, "alice")
    cookie = alice.client.get_cookie("visa_session").value

    def request(cookie_value: str | None) -> SimpleNamespace:
        async def is_disconnected() -> bool:
            return False
        return SimpleNamespace(cookies={"visa_session": cookie_value} if cookie_value else {}, is_disconnected=is_disconnected)

    assert stream.identify(request(None)) is None
    assert stream.identify(request(cookie[:-3] + "abc")) is None
    assert asyncio.run(stream.endpoint(request(None))).status_code == 401
    ident = stream.identify(request(cookie))
    assert ident is not None

    async def run() -> list[bytes]:
        gen = stream.events(stream.stream(*ident), request(cookie))
        out = [await gen.__anext__(), await gen.__anext__()]  # retry, ready
        _set(db, world.uid, InstanceState.ACTIVE, CommandState.DONE)
        out.append(await asyncio.wait_for(gen.__anext__(), 5))
        with db.unit_of_work() as s:
            inst = s.scalar(select(Instance).where(Instance.uid == world.uid))
            s.add(InstanceThumbnail(instance_id=inst.id, image=JPEG, updated_at=clock.now()))
        out.append(await asyncio.wait_for(gen.__anext__(), 5))
        with db.unit_of_work() as s:
            inst = s.scalar(select(Instance).where(Instance.uid == world.uid))
            inst.deleted_at = clock.now()
        out.append(await asyncio.wait_for(gen.__anext__(), 5))
        await gen.aclose()
        return out

    retry, ready, changed, thumb, gone = asyncio.run(run())
    assert retry.startswith(b"retry:")
    assert ready.startswith(b"event: ready") and world.uid.encode() in ready
    assert changed.startswith(b"event: instance\n") and b'"state":"ACTIVE"' in changed and b'"progress"' in changed
    assert b"secret" not in changed
    assert thumb.startswith(b"event: thumbnail\n") and f"/api/instances/{world.uid}/thumbnail?v=".encode() in thumb
    assert gone == b'event: instances\ndata: {"uids":[]}\n\n'


def test_a_state_change_by_this_process_s_worker_reaches_the_stream_at_once(world, db, app, api_client,
                                                                          monkeypatch) -> None:
    from visa.web import events

    monkeypatch.setattr(events, "POLL_SECONDS", 60.0)  # the poll alone would not see it in time
    stream = events.EventStream(app)
    alice = _logged_in(api_client, "alice")
    cookie = alice.client.get_cookie("visa_session").value

    async def is_disconnected() -> bool:
        return False

    request = SimpleNamespace(cookies={"visa_session": cookie}, is_disconnected=is_disconnected)
    ident = stream.identify(request)
    assert ident is not None

    async def run() -> bytes:
        gen = stream.events(stream.stream(*ident), request)
        await gen.__anext__(), await gen.__anext__()  # retry, ready
        pending = asyncio.ensure_future(gen.__anext__())
        await asyncio.sleep(0.1)  # the stream is waiting now
        _set(db, world.uid, InstanceState.ACTIVE, CommandState.DONE)
        await asyncio.get_running_loop().run_in_executor(None, stream.services.bus.notify)  # as the worker's sync does
        try:
            return await asyncio.wait_for(pending, 10)
        finally:
            await gen.aclose()

    changed = asyncio.run(run())
    assert changed.startswith(b"event: instance\n") and b'"state":"ACTIVE"' in changed


def test_event_streams_are_short_and_end_when_the_session_does(world, db, app, api_client, monkeypatch) -> None:
    from visa.web import events

    monkeypatch.setattr(events, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(events, "MAX_STREAM_SECONDS", 0.2)
    monkeypatch.setattr(events, "LISTEN_STREAM_SECONDS", 0.2)  # PostgreSQL: the stream listens
    monkeypatch.setattr(events, "HEARTBEAT_SECONDS", 0.05)
    stream = events.EventStream(app)
    c = _logged_in(api_client, "alice")
    cookie = c.client.get_cookie("visa_session").value

    async def connected() -> bool:
        return False

    request = SimpleNamespace(cookies={"visa_session": cookie}, is_disconnected=lambda: connected())

    async def drain(user_stream: events.UserStream) -> list[bytes]:
        return [chunk async for chunk in stream.events(user_stream, request)]

    ident = stream.identify(request)
    chunks = asyncio.run(asyncio.wait_for(drain(stream.stream(*ident)), 5))
    assert chunks[0].startswith(b"retry:") and chunks[1].startswith(b"event: ready")  # then it ends on its own
    assert b'"versions":{"' in chunks[1]

    # A password change (the session epoch) ends a stream at its next check.
    monkeypatch.setattr(events, "MAX_STREAM_SECONDS", 5)
    monkeypatch.setattr(events, "LISTEN_STREAM_SECONDS", 5)
    monkeypatch.setattr(events, "RECHECK_SECONDS", 0.0)
    monkeypatch.setattr(events, "LISTEN_RECHECK_SECONDS", 0.0)
    from werkzeug.security import generate_password_hash

    from visa.users.models import User

    with db.unit_of_work() as s:
        s.scalar(select(User).where(User.username == "alice")).password_hash = generate_password_hash("new-pw")
    chunks = asyncio.run(asyncio.wait_for(drain(stream.stream(*ident)), 5))
    assert chunks[-1].startswith(b"event: logout")


def test_files_and_settings_are_on_the_page_for_whom_they_are_allowed(world, db, api_client) -> None:
    """The owner gets the file browser with uploads and the settings form; a GUEST neither, nor
    the files script; a USER member the files, not the settings."""
    _set(db, world.uid, InstanceState.ACTIVE, CommandState.DONE)
    owner = _logged_in(api_client, "alice").get(f"/instances/{world.uid}").get_data(as_text=True)
    assert 'data-testid="files-card"' in owner and 'id="files-upload"' in owner and "js/files.js" in owner
    assert 'id="edit-form"' in owner and 'value="tomo reconstruction"' in owner
    assert 'value="1280x800" selected' in owner and 'value="en-us" selected' in owner
    guest = _logged_in(api_client, "bob").get(f"/instances/{world.uid}").get_data(as_text=True)
    assert "files-card" not in guest and "js/files.js" not in guest and 'id="edit-form"' not in guest
    with db.unit_of_work() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == world.uid))
        carol = s.scalar(select(User).where(User.username == "carol"))
        inst.members.append(InstanceMember(user=carol, role=MemberRole.USER, created_at=inst.created_at))
    user = _logged_in(api_client, "carol").get(f"/instances/{world.uid}").get_data(as_text=True)
    assert 'data-testid="files-card"' in user and 'id="files-upload"' in user and 'id="edit-form"' not in user


def test_the_desktop_page_carries_the_clipboard_allow_list(world, db, app, api_client) -> None:
    _set(db, world.uid, InstanceState.ACTIVE, CommandState.DONE)
    app.extensions["visa"].settings.clipboard.url_hosts = ["doi.org", "*.esrf.fr"]
    html = _logged_in(api_client, "alice").get(f"/instances/{world.uid}/desktop").get_data(as_text=True)
    assert """data-url-hosts='["doi.org", "*.esrf.fr"]'""" in html and 'data-url-max="2048"' in html
    assert 'rel="noopener noreferrer"' in html
