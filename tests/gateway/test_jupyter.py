"""The Jupyter proxy against a real JupyterLab: on a host of the user-content domain only,
owner only, token injected and never shown, nothing of visa's forwarded or served there."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.gateway.conftest import OTHER_UID, SECRET, UID, Jupyter, Live, World, make_world
from visa.instances.models import Instance
from visa.users import service as users
from visa.users.models import User

pytestmark = pytest.mark.timeout(180)
STATUS = f"/jupyter/{UID}/api/status"


@pytest.fixture
def world(live: Live, jupyter: Jupyter) -> World:
    return make_world(live.db, live.clock, jupyter_port=jupyter.port)


def test_owner_reaches_jupyter_on_the_instance_host(live: Live, world: World) -> None:
    with live.login("owner") as client:
        r = client.get(f"/jupyter/{UID}/lab?reset")
        assert r.status_code == 303 and r.headers["cache-control"] == "no-store"
        link = urlsplit(r.headers["location"])
        assert f"{link.scheme}://{link.netloc}" == f"http://{live.content()}"
        assert link.path == "/_visa/login"
        assert parse_qs(link.query)["next"] == [f"/jupyter/{UID}/lab?reset"]
        with live.open_lab(client) as lab:
            r = lab.get(STATUS)
            assert r.status_code == 200, r.text
            assert "kernels" in r.json()
            assert SECRET not in r.text
            assert "frame-ancestors 'self'" in r.headers.get_list("content-security-policy")


def test_the_lab_cookie_is_host_only_httponly_and_lax(live: Live, world: World) -> None:
    with live.login("owner") as client:
        location = httpx.URL(client.get(f"/jupyter/{UID}/lab").headers["location"])
        with live.http(headers={"Host": live.content()}) as lab:
            r = lab.get(location.raw_path.decode())
        assert r.status_code == 303 and r.headers["location"] == f"/jupyter/{UID}/lab"
        cookie = r.headers["set-cookie"]
        attributes = [a.strip().lower() for a in cookie.split(";")[1:]]
        assert cookie.startswith("visa_lab=")
        assert "httponly" in attributes and "samesite=lax" in attributes and "path=/" in attributes
        assert not any(a.startswith("domain") for a in attributes)
        assert r.headers["referrer-policy"] == "no-referrer"


def test_a_link_is_spent_once_and_only_on_its_instance(live: Live, world: World) -> None:
    with live.login("owner") as client:
        link = httpx.URL(client.get(f"/jupyter/{UID}/lab").headers["location"]).raw_path.decode()
        with live.http(headers={"Host": live.content(OTHER_UID)}) as other:
            assert other.get(link).status_code == 401  # another instance's host
        with live.http(headers={"Host": live.content()}) as lab:
            assert lab.get(link).status_code == 303
        with live.http(headers={"Host": live.content()}) as again:
            assert again.get(link).status_code == 401  # spent
        # A Jupyter link is no desktop token.
        token = parse_qs(urlsplit(link).query)["token"][0]
        with pytest.raises(InvalidStatus) as info:
            connect(f"{live.ws_base}/ws/desktop/{UID}?token={token}", open_timeout=10).close()
        assert info.value.response.status_code == 403


def test_visa_host_serves_no_instance_content(live: Live, world: World) -> None:
    with live.login("owner") as client:
        for path in (STATUS, f"/jupyter/{UID}/static/attack.html", f"/jupyter/{UID}/lab"):
            r = client.get(path)
            assert r.status_code == 303, (path, r.status_code)
            assert r.headers["location"].startswith(f"http://{live.content()}/_visa/login?")
            assert "kernels" not in r.text and "planted" not in r.text
        assert client.post(f"/jupyter/{UID}/api/kernels", json={}).status_code in (404, 405)


def test_user_content_host_serves_nothing_of_visa(live: Live, world: World) -> None:
    with live.login("owner") as client, live.open_lab(client) as lab:
        lab.cookies.update(client.cookies)  # even with visa's own cookie
        for path in (
            "/",
            "/login",
            "/api/me",
            "/api/tokens",
            f"/instances/{UID}",
            "/static/js/app.js",
            "/health",
        ):
            r = lab.get(path)
            assert r.status_code == 404, (path, r.status_code, r.text[:200])
            assert r.json()["error"] == "not_found"
        assert lab.post("/api/tokens", json={"name": "x"}).status_code in (404, 405)
        # The instance's path under another instance's host is not served either.
        r = lab.get(STATUS, headers={"Host": live.content(OTHER_UID)})
        assert r.status_code in (401, 404)


def test_other_users_get_404_and_anonymous_401_or_login(live: Live, world: World) -> None:
    for who in ("stranger", "guest", "helper"):  # members who are not the owner too
        with live.login(who) as client:
            assert client.get(STATUS).status_code == 404
    with live.http() as anonymous:
        assert anonymous.get(STATUS).status_code == 401
        page = anonymous.get(f"/jupyter/{UID}/lab", headers={"Accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")
    with live.http(headers={"Host": live.content()}) as anonymous:
        assert anonymous.get(STATUS).status_code == 401
        page = anonymous.get(f"/jupyter/{UID}/lab", headers={"Accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"] == f"{live.base}/jupyter/{UID}/lab"
        anonymous.cookies.set("visa_lab", "forged.cookie.value")
        assert anonymous.get(STATUS).status_code == 401


def test_a_lab_cookie_opens_only_its_own_instance(live: Live, world: World) -> None:
    with live.login("owner") as client, live.open_lab(client) as lab:
        assert lab.get(STATUS).status_code == 200
        other = f"/jupyter/{OTHER_UID}/api/status"
        assert lab.get(other, headers={"Host": live.content(OTHER_UID)}).status_code == 401
        assert lab.get(other).status_code == 404  # another instance's path on this host


def test_a_logged_out_or_changed_account_loses_jupyter(live: Live, world: World) -> None:
    with live.login("owner") as client, live.open_lab(client) as lab:
        assert lab.get(STATUS).status_code == 200
        with live.db.unit_of_work() as s:
            s.get(User, world.owner.id).password_hash = "changed" * 4  # sessions die with the password
        assert lab.get(STATUS).status_code == 401


def test_a_logout_ends_the_lab_of_that_session_only(live: Live, world: World) -> None:
    """The lab cookie is bound to the visa login session that opened it."""
    with (
        live.login("owner") as first,
        live.open_lab(first) as lab,
        live.login("owner") as second,
        live.open_lab(second) as other_lab,
    ):
        assert lab.get(STATUS).status_code == 200 and other_lab.get(STATUS).status_code == 200
        assert first.post("/api/logout").status_code == 200
        assert lab.get(STATUS).status_code == 401
        r = lab.get(f"/jupyter/{UID}/lab", headers={"Accept": "text/html"})
        assert r.status_code == 303 and r.headers["location"].startswith(live.base)
        assert other_lab.get(STATUS).status_code == 200


def test_a_revocation_or_deactivation_ends_the_lab(live: Live, world: World) -> None:
    with live.login("owner") as client, live.open_lab(client) as lab:
        assert lab.get(STATUS).status_code == 200
        with live.db.unit_of_work() as s:  # what an administrator's revocation does
            assert users.end_sessions(s, s.get(User, world.owner.id)) >= 1
        assert lab.get(STATUS).status_code == 401
    with live.login("owner") as client, live.open_lab(client) as lab:
        assert lab.get(STATUS).status_code == 200
        with live.db.unit_of_work() as s:
            s.get(User, world.owner.id).active = False
        assert lab.get(STATUS).status_code == 401
        with live.db.unit_of_work() as s:
            s.get(User, world.owner.id).active = True


def test_a_link_asked_for_in_a_session_that_has_ended_opens_nothing(live: Live, world: World) -> None:
    with live.login("owner") as client:
        r = client.get(f"/jupyter/{UID}/lab")
        assert r.status_code == 303
        location = httpx.URL(r.headers["location"])
        assert client.post("/api/logout").status_code == 200
    with live.http(headers={"Host": live.content()}) as lab:
        r = lab.get(location.raw_path.decode())
        assert r.status_code == 401 and "visa_lab" not in r.headers.get("set-cookie", "")


def test_lab_page_loads_without_the_token(live: Live, world: World) -> None:
    with live.login("owner") as client, live.open_lab(client) as lab:
        r = lab.get(f"/jupyter/{UID}/lab", headers={"Accept-Encoding": "gzip"})
        assert r.status_code == 200
        assert "jupyter-config-data" in r.text
        assert SECRET not in r.text
        assert SECRET not in str(r.headers)


def test_activity_is_recorded(live: Live, world: World) -> None:
    live.clock.advance(minutes=3)
    with live.login("owner") as client, live.open_lab(client) as lab:
        assert lab.get(STATUS).status_code == 200
    deadline = time.monotonic() + 5
    while True:
        with live.db.unit_of_work() as s:
            if s.get(Instance, world.instance.id).last_seen_at == live.clock.now():
                break
        assert time.monotonic() < deadline, "no activity recorded"
        time.sleep(0.05)


def test_cross_origin_writes_are_refused(live: Live, world: World) -> None:
    with live.login("owner") as client, live.open_lab(client) as lab:
        kernels = f"/jupyter/{UID}/api/kernels"
        for origin in ("http://evil.example", live.base, f"http://{live.content(OTHER_UID)}"):
            assert lab.post(kernels, json={}, headers={"Origin": origin}).status_code == 403, origin
        for site in ("cross-site", "same-site"):  # same-site: another instance's host
            assert lab.post(kernels, json={}, headers={"Sec-Fetch-Site": site}).status_code == 403, site


def _kernel(lab: httpx.Client, live: Live) -> str:
    r = lab.post(
        f"/jupyter/{UID}/api/kernels",
        json={"name": "python3"},
        headers={"Origin": f"http://{live.content()}"},
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]  # type: ignore[no-any-return]


def _channels(live: Live, kernel: str) -> str:
    return f"{live.ws_base}/jupyter/{UID}/api/kernels/{kernel}/channels?session_id={uuid.uuid4()}"


def _content_ws(live: Live, url: str, uid: str = "", **kwargs):
    """A websocket to a user-content host, over a socket to 127.0.0.1 (no DNS for *.localhost here)."""
    port = int(live.base.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    url = url.replace(live.ws_base, f"ws://{live.content(uid)}")
    return connect(url, sock=sock, open_timeout=30, **kwargs)


def _lab_ws(live: Live, lab: httpx.Client, kernel: str):
    return _content_ws(
        live,
        _channels(live, kernel),
        additional_headers={"Cookie": live.cookie_header(lab)},
        origin=f"http://{live.content()}",
        max_size=None,
    )


def _run(ws, code: str) -> str:
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps(_execute(code, msg_id)))
    output = ""
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "no output from the kernel"
        msg = json.loads(ws.recv(timeout=60))
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            output += msg["content"]["text"]
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return output


def test_kernel_websocket_through_the_proxy(live: Live, world: World) -> None:
    with live.login("owner") as client, live.open_lab(client) as lab:
        kernel = _kernel(lab, live)
        try:
            url = _channels(live, kernel)
            with pytest.raises(InvalidStatus) as info:
                _content_ws(live, url).close()  # no cookie
            assert info.value.response.status_code == 401
            with pytest.raises(InvalidStatus) as info:
                connect(
                    url, additional_headers={"Cookie": live.cookie_header(client)}, origin=live.base
                ).close()  # type: ignore[arg-type]
            assert info.value.response.status_code != 101  # visa's host: no instance content
            for origin in ("http://evil.example", live.base):
                with pytest.raises(InvalidStatus) as info:
                    _content_ws(
                        live, url, additional_headers={"Cookie": live.cookie_header(lab)}, origin=origin
                    ).close()
                assert info.value.response.status_code == 403, origin
            with _lab_ws(live, lab, kernel) as ws:
                assert _run(ws, "print(6 * 7)").strip() == "42"
        finally:
            r = lab.delete(
                f"/jupyter/{UID}/api/kernels/{kernel}", headers={"Origin": f"http://{live.content()}"}
            )
            assert r.status_code == 204


def test_websocket_messages_are_bounded(live: Live, world: World) -> None:
    from tests.gateway.conftest import GATEWAY_CONFIG

    with live.login("owner") as client, live.open_lab(client) as lab:
        kernel = _kernel(lab, live)
        try:
            with _lab_ws(live, lab, kernel) as ws:  # from the instance: a message over the limit
                with pytest.raises(ConnectionClosed) as info:
                    # One display message (stream output may come in pieces).
                    size = GATEWAY_CONFIG.ws_max_bytes + 1000
                    _run(
                        ws,
                        f"from IPython.display import display; display({{'text/plain': 'x' * {size}}}, raw=True)",
                    )
                assert info.value.rcvd is not None and info.value.rcvd.code == 1009
            with _lab_ws(live, lab, kernel) as ws:  # from the browser
                ws.send("y" * (GATEWAY_CONFIG.ws_max_bytes + 1000))
                # On every new socket, Jupyter asks the kernel for its info and relays the status
                # messages that follow; they may come before the close, and nothing else may.
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        assert json.loads(ws.recv(timeout=30))["msg_type"] in ("status", "kernel_info_reply")
                assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        finally:
            lab.delete(f"/jupyter/{UID}/api/kernels/{kernel}", headers={"Origin": f"http://{live.content()}"})


def test_an_open_kernel_socket_closes_when_access_ends(live: Live, world: World) -> None:
    with live.login("owner") as client, live.open_lab(client) as lab:
        kernel = _kernel(lab, live)
        try:
            with _lab_ws(live, lab, kernel) as ws:
                assert _run(ws, "print(1 + 1)").strip() == "2"
                with live.db.unit_of_work() as s:
                    s.get(User, world.owner.id).active = False
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        ws.recv(timeout=30)
                assert info.value.rcvd is not None and info.value.rcvd.code == 4403
        finally:
            with live.db.unit_of_work() as s:
                s.get(User, world.owner.id).active = True
            with live.login("owner") as again, live.open_lab(again) as lab2:
                lab2.delete(
                    f"/jupyter/{UID}/api/kernels/{kernel}", headers={"Origin": f"http://{live.content()}"}
                )


def test_an_open_kernel_socket_closes_at_logout(live: Live, world: World) -> None:
    with live.login("owner") as client, live.open_lab(client) as lab:
        kernel = _kernel(lab, live)
        try:
            with _lab_ws(live, lab, kernel) as ws:
                assert _run(ws, "print(2 + 2)").strip() == "4"
                assert client.post("/api/logout").status_code == 200
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        ws.recv(timeout=30)
                assert info.value.rcvd is not None and info.value.rcvd.code == 4403
        finally:
            with live.login("owner") as again, live.open_lab(again) as lab2:
                lab2.delete(
                    f"/jupyter/{UID}/api/kernels/{kernel}", headers={"Origin": f"http://{live.content()}"}
                )


def _execute(code: str, msg_id: str) -> dict:
    return {
        "header": {
            "msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex, "msg_type": "execute_request",
            "version": "5.3", "date": "2026-01-01T00:00:00Z",
        },
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False},
    }  # fmt: skip


def test_no_cookie_and_no_visa_auth_go_upstream() -> None:
    from types import SimpleNamespace

    from starlette.datastructures import Headers

    from visa.gateway.jupyter import JupyterProxy
    from visa.gateway.service import Target

    proxy = JupyterProxy.__new__(JupyterProxy)
    proxy._reserved = frozenset({"visa_lab", "visa_session"})
    proxy.gateway = SimpleNamespace()
    headers = Headers(
        raw=[
            (b"cookie", b"visa_session=abc; _xsrf=2|x|y|z; visa_lab=signed; other=1; visa_lab=tossed"),
            (b"authorization", b"Bearer visa_user_token"),
            (b"origin", b"http://u1.instances.example"),
            (b"referer", b"http://u1.instances.example/jupyter/u/lab?x=1"),
            (b"accept", b"application/json"),
        ]
    )
    out = dict(
        proxy._upstream_headers(headers, Target(1, "10.0.0.5", 8888, "s3cr3t"), "http://10.0.0.5:8888")
    )
    assert "cookie" not in out  # none at all: the token authenticates
    assert out["authorization"] == "token s3cr3t"
    assert out["origin"] == "http://10.0.0.5:8888"
    assert out["referer"] == "http://10.0.0.5:8888/jupyter/u/lab?x=1"
    assert out["accept"] == "application/json"


def test_only_host_only_instance_cookies_come_back() -> None:
    from visa.gateway.jupyter import instance_cookie, lab_cookies

    reserved = frozenset({"visa_lab", "visa_session"})
    assert instance_cookie("_xsrf=2|a|b; Path=/jupyter/u/; SameSite=Lax", reserved)
    assert not instance_cookie("grab=1; Path=/; Domain=instances.example", reserved)
    assert not instance_cookie("grab=1; path=/;domain=.example", reserved)
    assert not instance_cookie("visa_session=forged; Path=/", reserved)
    assert not instance_cookie("visa_lab=; Max-Age=0", reserved)
    assert lab_cookies("a=1; visa_lab=one; visa_lab=two; visa_labx=3") == ["one", "two"]


def test_the_secret_is_scrubbed_across_chunks() -> None:
    from visa.gateway.jupyter import scrub

    async def collect(chunks: list[bytes]) -> bytes:
        async def source():
            for c in chunks:
                yield c

        return b"".join([part async for part in scrub(source(), b"SECRET")])

    assert asyncio.run(collect([b"<p>tok", b"en=SEC", b"RET;</p>", b"SECRET"])) == b"<p>token=;</p>"
    assert asyncio.run(collect([b"SESECRETCRET and more"])) == b" and more"
    big = [b"a" * 65536 for _ in range(8)]
    assert asyncio.run(collect(big)) == b"a" * 65536 * 8
