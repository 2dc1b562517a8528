"""The desktop gateway against a real Xtigervnc: tokens, refusals, handshake, view-only, activity."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import delete, select
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.gateway.conftest import OTHER_UID, SECRET, UID, Live, Vnc, World, make_world
from tests.gateway.wsrfb import WsRfb, distinct_colours, key_event, pointer_event, update_request
from visa.instances.models import ConnectToken, Instance, InstanceMember

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def world(live: Live, vnc: Vnc) -> World:
    return make_world(live.db, live.clock, vnc_port=vnc.port)


# A token opens the desktop only from the browser session that asked for it: its cookie.
SESSIONS: dict[str, str] = {}


def _token_in(url: str) -> str:
    return parse_qs(urlsplit(url).query).get("token", [""])[0]


def _token(live: Live, username: str, uid: str = UID) -> dict:
    with live.login(username) as client:
        r = client.post(f"/api/instances/{uid}/connect")
        assert r.status_code == 200, r.text
        assert r.headers["Cache-Control"] == "no-store"
        SESSIONS[_token_in(r.json()["url"])] = live.cookie_header(client)
        return r.json()  # type: ignore[no-any-return]


def _open(live: Live, url: str, cookie: str | None = None, **kwargs):
    cookie = SESSIONS.get(_token_in(url), "") if cookie is None else cookie
    return connect(
        live.ws_base + url,
        subprotocols=["binary"],
        open_timeout=10,
        max_size=None,
        compression=None,
        additional_headers={"Cookie": cookie} if cookie else None,
        **kwargs,
    )


def _refused(live: Live, url: str, cookie: str | None = None) -> int:
    with pytest.raises(InvalidStatus) as info:
        _open(live, url, cookie).close()
    return info.value.response.status_code


# ---------------------------------------------------------------- the connect endpoint


def test_connect_answers_a_one_time_url_and_no_secret(live: Live, world: World) -> None:
    body = _token(live, "owner")
    assert set(body) == {"url", "expires_in", "view_only", "role"}
    assert body["expires_in"] == 30 and body["view_only"] is False and body["role"] == "OWNER"
    url = urlsplit(body["url"])
    assert url.path == f"/ws/desktop/{UID}"
    token = parse_qs(url.query)["token"][0]
    assert SECRET not in str(body)
    # Stored hashed, bound to the user and the instance, valid 30 s.
    with live.db.unit_of_work() as s:
        row = s.scalar(select(ConnectToken))
        assert len(row.token_hash) == 64 and token not in row.token_hash
        assert row.token_hash != hashlib.sha256(token.encode()).hexdigest()  # bound to the session
        assert (row.user_id, row.instance_id) == (world.owner.id, world.instance.id)
        assert (row.expires_at - row.created_at).total_seconds() == 30 and row.used_at is None

    guest = _token(live, "guest")
    assert guest["view_only"] is True and guest["role"] == "GUEST"
    assert _token(live, "helper")["view_only"] is False


def test_connect_needs_membership_login_and_csrf(live: Live, world: World) -> None:
    with live.login("stranger") as client:
        assert client.post(f"/api/instances/{UID}/connect").status_code == 404
    with live.http() as anonymous:
        assert anonymous.post(f"/api/instances/{UID}/connect").status_code in (401, 403)
    with live.login("owner") as client:
        del client.headers["X-CSRF-Token"]
        assert client.post(f"/api/instances/{UID}/connect").status_code == 403


def test_connect_refused_when_the_instance_is_not_running(live: Live, world: World) -> None:
    with live.db.unit_of_work() as s:
        s.get(Instance, world.instance.id).state = "STOPPED"
    with live.login("owner") as client:
        assert client.post(f"/api/instances/{UID}/connect").status_code == 409


# ---------------------------------------------------------------- refusals at the websocket


def test_refuses_without_token(live: Live, world: World) -> None:
    assert _refused(live, f"/ws/desktop/{UID}") == 401
    assert _refused(live, f"/ws/desktop/{UID}?token=") == 401


def test_refuses_a_made_up_token(live: Live, world: World) -> None:
    assert _refused(live, f"/ws/desktop/{UID}?token=forged-token-value") == 403


def test_refuses_a_reused_token(live: Live, world: World) -> None:
    url = _token(live, "owner")["url"]
    with _open(live, url) as ws:
        assert WsRfb(ws).handshake() == [1]
    assert _refused(live, url) == 403


def test_refuses_an_expired_token(live: Live, world: World) -> None:
    url = _token(live, "owner")["url"]
    live.clock.advance(seconds=31)
    assert _refused(live, url) == 403


def test_refuses_a_token_for_another_instance(live: Live, world: World) -> None:
    token = parse_qs(urlsplit(_token(live, "owner")["url"]).query)["token"][0]
    assert _refused(live, f"/ws/desktop/{OTHER_UID}?token={token}") == 403
    # The same token is still good where it belongs: it was not spent by the wrong door.
    with _open(live, f"/ws/desktop/{UID}?token={token}") as ws:
        WsRfb(ws).handshake()


def test_a_token_opens_only_from_the_browser_session_that_asked(live: Live, world: World) -> None:
    url = _token(live, "owner")["url"]
    with live.login("owner") as thief:  # the same user, another browser session
        assert _refused(live, url, cookie=live.cookie_header(thief)) == 403
    assert _refused(live, url, cookie="") == 403  # no session at all
    with live.login("stranger") as stranger:
        assert _refused(live, url, cookie=live.cookie_header(stranger)) == 403
    # None of them spent it: its own session still opens the desktop.
    with _open(live, url) as ws:
        WsRfb(ws).handshake()


def test_a_token_of_a_session_that_has_ended_opens_nothing(live: Live, world: World) -> None:
    """The token is bound to the server-side login session: once it ends (here a logout), the
    cookie a thief kept of it spends nothing, and the token is left unspent."""
    with live.login("owner") as client:
        r = client.post(f"/api/instances/{UID}/connect")
        assert r.status_code == 200, r.text
        url, cookie = r.json()["url"], live.cookie_header(client)
        assert client.post("/api/logout").status_code == 200
    assert _refused(live, url, cookie=cookie) == 403
    with live.db.unit_of_work() as s:
        assert s.scalar(select(ConnectToken)).used_at is None


def test_an_api_token_caller_gets_a_token_for_a_client_without_session(live: Live, world: World) -> None:
    with live.login("owner") as client:
        r = client.post("/api/tokens", json={"name": "script"})
        assert r.status_code == 201, r.text
        api_token = r.json()["token"]
    with live.http(headers={"Authorization": f"Bearer {api_token}"}) as script:
        r = script.post(f"/api/instances/{UID}/connect")
        assert r.status_code == 200, r.text
        url = r.json()["url"]
    with live.login("owner") as browser:  # a browser session cannot spend it
        assert _refused(live, url, cookie=live.cookie_header(browser)) == 403
    with _open(live, url, cookie="") as ws:
        WsRfb(ws).handshake()


def test_a_cross_site_websocket_is_refused_before_the_token_is_spent(live: Live, world: World) -> None:
    url = _token(live, "owner")["url"]
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        origin = headers.pop("Origin", None)
        with pytest.raises(InvalidStatus) as info:
            connect(
                live.ws_base + url,
                origin=origin,  # type: ignore[arg-type]
                additional_headers={"Cookie": SESSIONS[_token_in(url)], **headers},
                open_timeout=10,
            ).close()
        assert info.value.response.status_code == 403
    with live.db.unit_of_work() as s:
        assert s.scalar(select(ConnectToken)).used_at is None
    with _open(live, url) as ws:
        WsRfb(ws).handshake()


def test_refuses_a_non_member(live: Live, world: World) -> None:
    """A token issued to a member who is removed before using it is worthless."""
    url = _token(live, "helper")["url"]
    with live.db.unit_of_work() as s:
        s.execute(delete(InstanceMember).where(InstanceMember.user_id == world.user.id))
    assert _refused(live, url) == 403


def test_refuses_cross_site_websockets(live: Live, world: World) -> None:
    url = _token(live, "owner")["url"]
    with pytest.raises(InvalidStatus) as info:
        connect(live.ws_base + url, origin="http://evil.example", open_timeout=10).close()  # type: ignore[arg-type]
    assert info.value.response.status_code == 403


# ---------------------------------------------------------------- the relay


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_owner_gets_the_desktop_with_security_none(live: Live, world: World) -> None:
    opened = _sample("visa_gateway_connections_opened_total", kind="desktop")
    sent = _sample("visa_gateway_bytes_total", kind="desktop", direction="to_client")
    with _open(live, _token(live, "owner")["url"]) as ws:
        assert ws.subprotocol == "binary"
        rfb = WsRfb(ws)
        assert rfb.handshake() == [1], "the browser is offered security None only"
        assert (rfb.width, rfb.height, rfb.name) == (640, 480, "gateway-test")
        screen = rfb.screen()
        # Root window colour plus the terminal's: a real, non-blank framebuffer.
        assert distinct_colours(screen) >= 3
        assert screen.count(b"\0\0\0\0") < len(screen) // 8
        assert _sample("visa_gateway_connections", kind="desktop") >= 1
    # The relay is metered: one connection more, at least the framebuffer's bytes to the browser.
    assert _sample("visa_gateway_connections_opened_total", kind="desktop") == opened + 1
    deadline = time.monotonic() + 5
    while _sample("visa_gateway_bytes_total", kind="desktop", direction="to_client") - sent < len(screen):
        assert time.monotonic() < deadline, "relayed bytes not counted"
        time.sleep(0.05)


def test_guest_keys_never_reach_the_desktop(live: Live, world: World, vnc: Vnc) -> None:
    before = vnc.typed()
    with _open(live, _token(live, "owner")["url"]) as ws:
        owner = WsRfb(ws)
        owner.handshake()
        owner.send(pointer_event(100, 100))  # over the terminal
        for keysym in (ord("a"), ord("b")):
            owner.send(key_event(keysym, True) + key_event(keysym, False))
        owner.sync()
        _wait(lambda: vnc.typed() == before + b"ab", vnc)

        with _open(live, _token(live, "guest")["url"]) as gws:
            guest = WsRfb(gws)
            guest.handshake()
            guest.send(pointer_event(300, 300, 1) + pointer_event(300, 300, 0))
            for keysym in (ord("x"), ord("y"), 0xFF0D):
                guest.send(key_event(keysym, True) + key_event(keysym, False))
            guest.sync()  # the server has handled all the guest sent, had it been sent on
            assert guest.screen()  # and the guest still sees the desktop

        owner.send(key_event(ord("c"), True) + key_event(ord("c"), False))
        owner.sync()
        _wait(lambda: vnc.typed().endswith(b"c"), vnc)
    assert vnc.typed() == before + b"abc"


def _wait(condition, vnc: Vnc, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"the desktop received {vnc.typed()!r}"
        time.sleep(0.05)


def test_activity_is_recorded_and_input_only_from_who_may_type(live: Live, world: World) -> None:
    live.clock.advance(minutes=5)
    with _open(live, _token(live, "guest")["url"]) as ws:
        guest = WsRfb(ws)
        guest.handshake()
        guest.send(pointer_event(10, 10))
        guest.sync()
        time.sleep(0.8)  # > activity_seconds: the watcher has written
    with live.db.unit_of_work() as s:
        inst = s.get(Instance, world.instance.id)
        assert inst.last_seen_at == live.clock.now()
        assert inst.last_interaction_at is None, "a guest's dropped input is no interaction"

    live.clock.advance(minutes=5)
    with _open(live, _token(live, "owner")["url"]) as ws:
        owner = WsRfb(ws)
        owner.handshake()
        owner.send(pointer_event(120, 120))
        owner.sync()
        time.sleep(0.8)
    with live.db.unit_of_work() as s:
        inst = s.get(Instance, world.instance.id)
        assert inst.last_seen_at == inst.last_interaction_at == live.clock.now()


def test_a_revoked_member_is_disconnected(live: Live, world: World) -> None:
    with _open(live, _token(live, "helper")["url"]) as ws:
        rfb = WsRfb(ws)
        rfb.handshake()
        rfb.screen()
        with live.db.unit_of_work() as s:
            s.execute(delete(InstanceMember).where(InstanceMember.user_id == world.user.id))
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=5)
        assert ws.close_code == 4403


def test_an_open_desktop_closes_when_its_login_session_ends(live: Live, world: World) -> None:
    with live.login("owner") as client:
        r = client.post(f"/api/instances/{UID}/connect")
        assert r.status_code == 200, r.text
        with _open(live, r.json()["url"], cookie=live.cookie_header(client)) as ws:
            rfb = WsRfb(ws)
            rfb.handshake()
            rfb.screen()
            assert client.post("/api/logout").status_code == 200
            with pytest.raises(ConnectionClosed):
                while True:
                    ws.recv(timeout=5)
            assert ws.close_code == 4403


def test_the_desktop_down_is_a_clear_refusal(live: Live, world: World) -> None:
    with live.db.unit_of_work() as s:
        s.get(Instance, world.instance.id).provider_state = {"ports": {"VNC": 9, "JUPYTER": 9}}
    assert _refused(live, _token(live, "owner")["url"]) == 502


def test_spent_and_expired_tokens_are_purged(live: Live, world: World) -> None:
    from visa.gateway.service import purge_connect_tokens

    used = _token(live, "owner")["url"]
    with _open(live, used) as ws:
        WsRfb(ws).handshake()
    _token(live, "owner")  # still valid: kept
    with live.db.unit_of_work() as s:
        assert purge_connect_tokens(s, live.clock) == 1
    live.clock.advance(seconds=31)
    with live.db.unit_of_work() as s:
        assert purge_connect_tokens(s, live.clock) == 1
        assert s.scalar(select(ConnectToken)) is None


def test_open_desktops_are_capped_per_user_and_per_instance(live: Live, world: World) -> None:
    gateway = live.app.extensions["visa"].settings.gateway
    gateway.max_connections_per_user, gateway.max_connections_per_instance = 2, 3
    opened = []
    try:
        for _ in range(2):
            opened.append(_open(live, _token(live, "owner")["url"]))
            assert WsRfb(opened[-1]).handshake() == [1]
        url = _token(live, "owner")["url"]
        with pytest.raises(InvalidStatus) as info:
            _open(live, url).close()
        assert info.value.response.status_code == 429
        assert b"rate_limited" in info.value.response.body and b"open connections" in info.value.response.body
        opened.append(_open(live, _token(live, "guest")["url"]))  # the instance's third
        assert WsRfb(opened[-1]).handshake() == [1]
        url = _token(live, "helper")["url"]
        with pytest.raises(InvalidStatus) as info:
            _open(live, url).close()
        assert info.value.response.status_code == 503 and b"unavailable" in info.value.response.body
        opened.pop().close()  # a closed desktop no longer counts
        deadline = time.monotonic() + 5
        while True:
            try:
                opened.append(_open(live, _token(live, "helper")["url"]))
                break
            except InvalidStatus:
                assert time.monotonic() < deadline, "a closed desktop still counts"
                time.sleep(0.1)
        assert WsRfb(opened[-1]).handshake() == [1]
    finally:
        for ws in opened:
            ws.close()


def _clipboard(rfb: WsRfb, seconds: float, until: bytes | None = None) -> list[bytes]:
    """The clipboard texts the desktop sends this connection within ``seconds`` (stops at ``until``)."""
    texts: list[bytes] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and until not in texts:
        rfb.send(update_request(1, 1))
        while True:
            (kind,) = rfb.read(1)
            if kind == 3:
                _, length = struct.unpack(">3sI", rfb.read(7))
                texts.append(rfb.read(length))
                continue
            assert kind == 0, f"unexpected server message {kind}"
            (rects,) = struct.unpack(">xH", rfb.read(3))
            for _ in range(rects):
                _, _, w, h, _ = struct.unpack(">HHHHi", rfb.read(12))
                rfb.read(w * h * 4)
            break
        time.sleep(0.1)
    return texts


def _copy_on_the_desktop(vnc: Vnc, text: bytes) -> subprocess.Popen:
    """What a program on the desktop copies: xclip owns the clipboard until it is killed."""
    proc = subprocess.Popen(["xclip", "-selection", "clipboard", "-i"], stdin=subprocess.PIPE,
                            env={**os.environ, **vnc.env})
    assert proc.stdin is not None
    proc.stdin.write(text)
    proc.stdin.close()
    return proc


def test_the_clipboard_reaches_viewers_only_when_the_owner_says_so(live: Live, world: World, vnc: Vnc) -> None:
    owner, guest = _open(live, _token(live, "owner")["url"]), _open(live, _token(live, "guest")["url"])
    copied: list[subprocess.Popen] = []
    try:
        owner_rfb, guest_rfb = WsRfb(owner), WsRfb(guest)
        owner_rfb.handshake()
        guest_rfb.handshake()
        secret = b"copied on the desktop: " + uuid.uuid4().hex.encode()
        copied.append(_copy_on_the_desktop(vnc, secret))
        assert secret in _clipboard(owner_rfb, 10, until=secret)
        assert secret not in _clipboard(guest_rfb, 2)  # a view-only member: not by default
        assert guest_rfb.screen()  # and the desktop itself still flows

        with live.db.unit_of_work() as s:
            s.get(Instance, world.instance.id).clipboard_to_viewers = True
        with _open(live, _token(live, "guest")["url"]) as allowed:
            rfb = WsRfb(allowed)
            rfb.handshake()
            shared = b"shared with viewers: " + uuid.uuid4().hex.encode()
            copied.append(_copy_on_the_desktop(vnc, shared))
            assert shared in _clipboard(rfb, 10, until=shared)
    finally:
        owner.close()
        guest.close()
        for proc in copied:
            proc.kill()
            proc.wait()


def test_the_owner_sets_the_clipboard_policy(live: Live, world: World) -> None:
    with live.login("owner") as client:
        assert client.get(f"/api/instances/{UID}").json()["clipboard_to_viewers"] is False
        r = client.patch(f"/api/instances/{UID}", json={"clipboard_to_viewers": True})
        assert r.status_code == 200, r.text
        assert client.get(f"/api/instances/{UID}").json()["clipboard_to_viewers"] is True
        r = client.patch(f"/api/instances/{UID}", json={"clipboard_to_viewers": None})
        assert r.status_code == 400 and "clipboard_to_viewers" in r.text
    with live.login("helper") as member:  # a USER member acts in the machine, but sets no policy
        assert member.patch(f"/api/instances/{UID}", json={"clipboard_to_viewers": False}).status_code in (403, 404)


def test_the_viewers_filter_follows_a_real_tight_and_zrle_stream(vnc: Vnc) -> None:
    """The encodings noVNC asks for, from a real Xtigervnc while its screen changes: the filter
    keeps step with every message (it ends each quiet moment at a message boundary) and takes
    out exactly the clipboard."""
    import asyncio

    from tests.gateway.wsrfb import PIXEL_FORMAT
    from visa.gateway import rfb
    from visa.gateway.relay import open_upstream

    async def run(encodings: list[int]) -> None:
        up = await open_upstream("127.0.0.1", vnc.port)
        try:
            init = await rfb.server_handshake(up, SECRET)
            width, height = struct.unpack(">HH", init[:4])
            flt = rfb.ServerFilter(init, drop_clipboard=True)
            client = rfb.ClientFilter(view_only=True, server=flt)
            asked = struct.pack(f">BxH{len(encodings)}i", 2, len(encodings), *encodings)
            await up.write(client.feed(b"\x00\x00\x00\x00" + PIXEL_FORMAT + asked))
            up.start_relay()
            received = passed = 0
            copied = b"not for viewers " + uuid.uuid4().hex.encode()
            for step in range(8):
                if step == 3:
                    proc = _copy_on_the_desktop(vnc, copied)
                await up.write(update_request(width, height, incremental=step % 2 == 1))
                subprocess.run(["xdotool", "type", "--delay", "1", f"ls -la /usr/bin {step}\n"],
                               env={**os.environ, **vnc.env}, check=True)
                while True:
                    try:
                        async with asyncio.timeout(0.7):
                            data = await up.read_chunk()
                    except TimeoutError:
                        break
                    assert data is not None
                    received += len(data)
                    out = flt.feed(data)
                    passed += len(out)
                    assert copied not in out
                assert flt._want == ("peek", 1) and not flt._held, flt._want
            proc.kill()
            proc.wait()
            assert received - passed == 8 + len(copied), (received, passed)
        finally:
            up.close()

    levels = [-26, -256 + 2]  # JPEG quality, compression level
    asyncio.run(run([rfb.TIGHT, rfb.CURSOR, rfb.DESKTOP_SIZE, rfb.LAST_RECT, rfb.EXTENDED_DESKTOP_SIZE, *levels]))
    asyncio.run(run([rfb.ZRLE, rfb.COPY_RECT, rfb.CURSOR, rfb.DESKTOP_NAME]))
