"""The Jupyter proxy against a real JupyterLab: owner only, token injected and never shown."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.gateway.conftest import SECRET, UID, Jupyter, Live, World, make_world
from visa.instances.models import Instance

pytestmark = pytest.mark.timeout(180)
STATUS = f"/jupyter/{UID}/api/status"


@pytest.fixture
def world(live: Live, jupyter: Jupyter) -> World:
    return make_world(live.db, live.clock, jupyter_port=jupyter.port)


def test_owner_reaches_jupyter_with_the_session_cookie(live: Live, world: World) -> None:
    with live.login("owner") as client:
        r = client.get(STATUS)
        assert r.status_code == 200, r.text
        assert "kernels" in r.json()
        assert SECRET not in r.text


def test_other_users_get_404_and_anonymous_401_or_login(live: Live, world: World) -> None:
    for who in ("stranger", "guest", "helper"):  # members who are not the owner too
        with live.login(who) as client:
            assert client.get(STATUS).status_code == 404
    with live.http() as anonymous:
        assert anonymous.get(STATUS).status_code == 401
        page = anonymous.get(f"/jupyter/{UID}/lab", headers={"Accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")
        anonymous.cookies.set("visa_session", "forged.cookie.value")
        assert anonymous.get(STATUS).status_code == 401


def test_a_logged_out_or_changed_account_loses_jupyter(live: Live, world: World) -> None:
    with live.login("owner") as client:
        assert client.get(STATUS).status_code == 200
        with live.db.unit_of_work() as s:
            from visa.users.models import User

            s.get(User, world.owner.id).password_hash = "changed" * 4  # sessions die with the password
        assert client.get(STATUS).status_code == 401


def test_lab_page_loads_without_the_token(live: Live, world: World) -> None:
    with live.login("owner") as client:
        r = client.get(f"/jupyter/{UID}/lab")
        assert r.status_code == 200
        assert "jupyter-config-data" in r.text
        assert SECRET not in r.text
        assert SECRET not in str(r.headers)


def test_activity_is_recorded(live: Live, world: World) -> None:
    live.clock.advance(minutes=3)
    with live.login("owner") as client:
        assert client.get(STATUS).status_code == 200
    deadline = time.monotonic() + 5
    while True:
        with live.db.unit_of_work() as s:
            if s.get(Instance, world.instance.id).last_seen_at == live.clock.now():
                break
        assert time.monotonic() < deadline, "no activity recorded"
        time.sleep(0.05)


def test_cross_site_writes_are_refused(live: Live, world: World) -> None:
    with live.login("owner") as client:
        r = client.post(f"/jupyter/{UID}/api/kernels", json={}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
        r = client.post(f"/jupyter/{UID}/api/kernels", json={}, headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403


def test_kernel_websocket_through_the_proxy(live: Live, world: World) -> None:
    with live.login("owner") as client:
        # Same-origin write, as JupyterLab in the page makes it.
        r = client.post(
            f"/jupyter/{UID}/api/kernels", json={"name": "python3"}, headers={"Origin": live.base}
        )
        assert r.status_code == 201, r.text
        kernel = r.json()["id"]
        cookie = live.cookie_header(client)
        try:
            url = f"{live.ws_base}/jupyter/{UID}/api/kernels/{kernel}/channels?session_id={uuid.uuid4()}"
            with pytest.raises(InvalidStatus) as info:
                connect(url, open_timeout=30).close()  # no cookie
            assert info.value.response.status_code == 401
            with pytest.raises(InvalidStatus) as info:
                connect(url, additional_headers={"Cookie": cookie}, origin="http://evil.example").close()  # type: ignore[arg-type]
            assert info.value.response.status_code == 403

            with connect(url, additional_headers={"Cookie": cookie}, origin=live.base, open_timeout=30) as ws:  # type: ignore[arg-type]
                msg_id = uuid.uuid4().hex
                ws.send(json.dumps(_execute("print(6 * 7)", msg_id)))
                output = ""
                deadline = time.monotonic() + 60
                while "42" not in output:
                    assert time.monotonic() < deadline, "no output from the kernel"
                    msg = json.loads(ws.recv(timeout=60))
                    if msg.get("parent_header", {}).get("msg_id") == msg_id and msg["msg_type"] == "stream":
                        output += msg["content"]["text"]
                assert output.strip() == "42"
        finally:
            assert (
                client.delete(
                    f"/jupyter/{UID}/api/kernels/{kernel}", headers={"Origin": live.base}
                ).status_code
                == 204
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


def test_visa_cookie_and_auth_do_not_go_upstream() -> None:
    from starlette.datastructures import Headers

    from visa.gateway.jupyter import JupyterProxy
    from visa.gateway.service import Target

    proxy = JupyterProxy.__new__(JupyterProxy)
    proxy.cookie_name = "visa_session"
    headers = Headers(
        raw=[
            (b"cookie", b"visa_session=abc; _xsrf=2|x|y|z; other=1"),
            (b"authorization", b"Bearer visa_user_token"),
            (b"origin", b"http://visa.example"),
            (b"referer", b"http://visa.example/jupyter/u/lab?x=1"),
            (b"accept", b"application/json"),
        ]
    )
    out = dict(
        proxy._upstream_headers(headers, Target(1, "10.0.0.5", 8888, "s3cr3t"), "http://10.0.0.5:8888")
    )
    assert out["cookie"] == "_xsrf=2|x|y|z; other=1"
    assert out["authorization"] == "token s3cr3t"
    assert out["origin"] == "http://10.0.0.5:8888"
    assert out["referer"] == "http://10.0.0.5:8888/jupyter/u/lab?x=1"
    assert out["accept"] == "application/json"
