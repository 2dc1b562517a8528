"""Public view links against a real Xtigervnc, the attacker's side first: whoever holds a link
sends what they like over its websocket, and nothing of it reaches the desktop; a revoked or
expired link opens nothing, and an open one is closed; the link is no session anywhere else."""

from __future__ import annotations

import struct
import uuid
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.gateway.conftest import OTHER_UID, UID, Live, Vnc, World, make_world
from tests.gateway.test_desktop import _clipboard, _copy_on_the_desktop, _open, _token, _wait
from tests.gateway.wsrfb import WsRfb, key_event, pointer_event
from visa.instances.models import Instance
from visa.sharing.models import ViewLink
from visa.users.models import User

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def world(live: Live, vnc: Vnc) -> World:
    return make_world(live.db, live.clock, vnc_port=vnc.port)


def _link(live: Live, hours: int = 2, uid: str = UID) -> tuple[int, str]:
    """The owner makes a link: its id and its secret (the last part of its URL)."""
    with live.login("owner") as owner:
        r = owner.post(f"/api/instances/{uid}/view-links", json={"label": "Seminar, room 2", "hours": hours})
        assert r.status_code == 201, r.text
        return r.json()["id"], urlsplit(r.json()["url"]).path.rsplit("/", 1)[1]


def _view(live: Live, token: str, **kwargs) -> ClientConnection:
    """The link's holder opens the view: no cookie, nothing but the link."""
    return connect(f"{live.ws_base}/ws/view?token={token}", subprotocols=["binary"],  # type: ignore[list-item]
                   open_timeout=10, max_size=None, compression=None, **kwargs)


def _refused(live: Live, token: str) -> int:
    with pytest.raises(InvalidStatus) as info:
        _view(live, token).close()
    return info.value.response.status_code


def _closed(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed):
        while True:
            ws.recv(timeout=5)
    return ws.close_code


CUT_TEXT = 6
SET_DESKTOP_SIZE = 251


def test_nothing_a_link_holder_sends_reaches_the_desktop(live: Live, world: World, vnc: Vnc) -> None:
    _, token = _link(live)
    before = vnc.typed()
    with _view(live, token) as ws:
        viewer = WsRfb(ws)
        assert viewer.handshake() == [1]
        # Not the page's noVNC, which sends no input when view only: a client of the holder's own.
        viewer.send(pointer_event(100, 100) + pointer_event(100, 100, 1) + pointer_event(100, 100, 0))
        for keysym in (ord("x"), ord("y"), 0xFF0D):
            viewer.send(key_event(keysym, True) + key_event(keysym, False))
        viewer.send(b"\xff\x00\x00\x01\x00\x00\x00\x2d\x00\x00\x00\x1c")  # QEMU extended key event: 'z' down
        pasted = b"rm -rf ~\n"
        viewer.send(struct.pack(">BxxxI", CUT_TEXT, len(pasted)) + pasted)
        viewer.send(struct.pack(">BxHHBx", SET_DESKTOP_SIZE, 320, 200, 1) + struct.pack(">IHHHHI", 0, 0, 0, 320, 200, 0))
        viewer.sync()  # the server has handled all the viewer sent, had it been sent on
        assert viewer.screen(), "the holder still sees the desktop"
        assert (viewer.width, viewer.height) == (640, 480)

        with _open(live, _token(live, "owner")["url"]) as ows:  # the owner types alongside
            owner = WsRfb(ows)
            owner.handshake()
            assert (owner.width, owner.height) == (640, 480), "the viewer resized nothing"
            owner.send(pointer_event(100, 100))
            owner.send(key_event(ord("c"), True) + key_event(ord("c"), False))
            owner.sync()
            _wait(lambda: vnc.typed().endswith(b"c"), vnc)
    assert vnc.typed() == before + b"c"


def test_the_desktops_clipboard_never_reaches_a_link(live: Live, world: World, vnc: Vnc) -> None:
    with live.db.unit_of_work() as s:  # even where the owner shares it with view-only members
        s.get(Instance, world.instance.id).clipboard_to_viewers = True
    _, token = _link(live)
    copied = []
    with _view(live, token) as ws, _open(live, _token(live, "guest")["url"]) as gws:
        viewer, guest = WsRfb(ws), WsRfb(gws)
        viewer.handshake()
        guest.handshake()
        secret = b"copied on the desktop: " + uuid.uuid4().hex.encode()
        copied.append(_copy_on_the_desktop(vnc, secret))
        try:
            assert secret in _clipboard(guest, 10, until=secret)  # it was sent to viewers...
            assert secret not in _clipboard(viewer, 2)  # ...but not to the link
            assert viewer.screen()
        finally:
            for proc in copied:
                proc.kill()
                proc.wait()


def test_a_revoked_or_expired_link_opens_nothing(live: Live, world: World) -> None:
    revoked, revoked_token = _link(live)
    _, expiring_token = _link(live, hours=1)
    with live.login("owner") as owner:
        r = owner.delete(f"/api/instances/{UID}/view-links/{revoked}")
        assert r.status_code == 200 and r.json()["active"] is False, r.text
    assert _refused(live, revoked_token) == 403
    with _view(live, expiring_token) as ws:
        WsRfb(ws).handshake()
    live.clock.advance(minutes=61)
    assert _refused(live, expiring_token) == 403
    for token in ("", "x" * 43, revoked_token + "x", "a" * 500):
        assert _refused(live, token) == 403
    with live.http() as anyone:  # the page says so, and offers nothing
        page = anyone.get(f"/view/{revoked_token}")
        assert page.status_code == 404 and "not valid any more" in page.text and "/ws/view" not in page.text
        assert "view.js" not in page.text


def test_an_open_view_closes_when_its_link_is_revoked(live: Live, world: World) -> None:
    link, token = _link(live)
    with _view(live, token) as ws:
        rfb = WsRfb(ws)
        rfb.handshake()
        rfb.screen()
        with live.login("owner") as owner:
            assert owner.delete(f"/api/instances/{UID}/view-links/{link}").status_code == 200
        assert _closed(ws) == 4403  # within the gateway's activity period (0.3 s here)


def test_an_open_view_closes_when_its_link_expires(live: Live, world: World) -> None:
    _, token = _link(live, hours=1)
    with _view(live, token) as ws:
        rfb = WsRfb(ws)
        rfb.handshake()
        rfb.screen()
        live.clock.advance(minutes=60)
        assert _closed(ws) == 4403


def test_a_link_of_a_former_owner_or_a_deactivated_one_opens_nothing(live: Live, world: World) -> None:
    _, token = _link(live)
    with live.db.unit_of_work() as s:
        s.get(User, world.owner.id).active = False
    assert _refused(live, token) == 403
    with live.db.unit_of_work() as s:
        s.get(User, world.owner.id).active = True
        s.get(Instance, world.instance.id).owner_id = world.user.id  # the machine changed hands
    assert _refused(live, token) == 403


def test_a_link_is_no_session_anywhere_else(live: Live, world: World) -> None:
    _, token = _link(live)
    with live.http() as holder:
        page = holder.get(f"/view/{token}")
        assert page.status_code == 200, page.text
        assert "set-cookie" not in page.headers and not holder.cookies
        assert page.headers["Cache-Control"] == "no-store" and page.headers["Referrer-Policy"] == "no-referrer"
        assert "Seminar, room 2" in page.text and UID not in page.text and "csrf" not in page.text
        # Nothing else answers to it: not the API, not the instance's pages, files, desktop or lab.
        for path in ("/api/me", f"/api/instances/{UID}", f"/api/instances/{UID}/files", "/api/instances"):
            assert holder.get(path).status_code == 401, path
            assert holder.get(path, params={"token": token}).status_code == 401, path
            assert holder.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 401, path
        assert holder.post(f"/api/instances/{UID}/connect").status_code in (401, 403)
        assert holder.get(f"/instances/{UID}").status_code in (302, 303)
        assert holder.get(f"/jupyter/{UID}/lab").status_code == 401
    with pytest.raises(InvalidStatus) as info:  # nor the members' desktop socket
        connect(f"{live.ws_base}/ws/desktop/{UID}?token={token}", open_timeout=10).close()
    assert info.value.response.status_code in (401, 403)
    # Nor from another site's page (the link's holder is lured there): refused before it is looked at.
    with pytest.raises(InvalidStatus) as info:
        _view(live, token, origin="http://evil.example").close()
    assert info.value.response.status_code == 403
    with live.db.unit_of_work() as s:  # only the hash of the secret is kept
        row = s.scalar(select(ViewLink))
        assert row is not None and token not in row.token_hash


def test_only_the_owner_makes_and_revokes_links(live: Live, world: World) -> None:
    link, token = _link(live)
    url = f"/api/instances/{UID}/view-links"
    for who, status in (("helper", 403), ("guest", 403), ("stranger", 404)):
        with live.login(who) as client:
            assert client.post(url, json={"label": "mine", "hours": 1}).status_code == status, who
            assert client.get(url).status_code == status, who
            assert client.delete(f"{url}/{link}").status_code == status, who
    with live.login("owner") as owner:
        for body, field in (({"label": "x" * 101, "hours": 1}, "label"), ({"label": "", "hours": 1}, "label"),
                            ({"label": "talk", "hours": 73}, "hours"), ({"label": "talk", "hours": 0}, "hours"),
                            ({"label": "talk", "hours": 1, "role": "USER"}, "role")):
            r = owner.post(url, json=body)
            assert r.status_code == 400 and r.json()["field"] == field, (body, r.text)
        assert owner.delete(f"{url}/999999").status_code == 404
        assert owner.delete(f"/api/instances/{OTHER_UID}/view-links/{link}").status_code == 404
        listed = owner.get(url).json()
        assert [(x["id"], x["label"], x["active"], x["url"]) for x in listed] == [(link, "Seminar, room 2", True, None)]
    with live.db.unit_of_work() as s:
        assert s.scalar(select(ViewLink).where(ViewLink.id == link)).revoked_at is None
    live.clock.advance(hours=3)
    assert httpx.get(f"{live.base}/view/{token}", timeout=10).status_code == 404  # expired (2 h)
