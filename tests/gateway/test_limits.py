"""What one lab, user or instance may take of the gateway, against real hostile upstreams:
no cookie goes to Jupyter, one instance's slow Jupyter delays no other, answers that stall or
inflate are cut at a bound, and connects and open connections are capped with a clear refusal."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.gateway.conftest import GATEWAY_CONFIG, OTHER_UID, UID, Live, World, make_world
from tests.gateway.upstream import HostileUpstream, hostile_upstream
from visa.gateway.common import GatewayConfig
from visa.instances.models import Instance

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def gateway_config() -> GatewayConfig:
    # The production cache of lab checks: 300 requests of one lab must not mean 300 lookups.
    return GatewayConfig(**{**GATEWAY_CONFIG.__dict__, "auth_cache_seconds": 5.0})


@pytest.fixture
def upstreams() -> Iterator[tuple[HostileUpstream, HostileUpstream]]:
    with hostile_upstream() as slow, hostile_upstream() as other:
        yield slow, other


@pytest.fixture
def world(live: Live, upstreams: tuple[HostileUpstream, HostileUpstream]) -> World:
    world = make_world(live.db, live.clock, jupyter_port=upstreams[0].port)
    with live.db.unit_of_work() as s:  # the stranger's instance has a Jupyter of its own
        other = s.get(Instance, world.other.id)
        other.provider_state = {"ports": {"VNC": 1, "JUPYTER": upstreams[1].port}}
    return world


def _gateway(live: Live):
    return live.app.extensions["visa"].settings.gateway


def test_a_cookie_planted_in_the_lab_never_reaches_jupyter(live: Live, world: World, upstreams) -> None:
    upstream = upstreams[0]
    with live.login("owner") as client, live.open_lab(client) as lab:
        # What a script of the lab can do: set a cookie for the lab's own host.
        cookie = f"planted=by-a-script; {live.cookie_header(lab)}; _xsrf=2|aa|bb|cc"
        r = lab.get(f"/jupyter/{UID}/api/status", headers={"Cookie": cookie})
        assert r.status_code == 200, r.text
    seen = upstream.headers[-1]
    assert "cookie" not in seen, seen["cookie"]
    assert seen["authorization"].startswith("token ")


def _lab_cookie(live: Live, who: str, uid: str) -> str:
    with live.login(who) as client, live.open_lab(client, uid) as lab:
        return live.cookie_header(lab)


def test_one_lab_holding_300_slow_requests_does_not_delay_another_instances_lab(
    live: Live, world: World, upstreams
) -> None:
    slow, _ = upstreams
    slow.slow_seconds = 6
    settings = _gateway(live)
    settings.jupyter_wait_seconds = 3
    hog, other = _lab_cookie(live, "owner", UID), _lab_cookie(live, "stranger", OTHER_UID)
    port = int(live.base.rsplit(":", 1)[1])

    async def attack() -> tuple[float, list[int]]:
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, trust_env=False,
                                     timeout=60) as client:

            async def one(path: str, cookie: str, host: str) -> int:
                r = await client.get(path, headers={"Host": host, "Cookie": cookie})
                return r.status_code

            held = [asyncio.create_task(one(f"/jupyter/{UID}/api/slow", hog, live.content())) for _ in range(300)]
            deadline = time.monotonic() + 20
            while slow.in_flight < settings.jupyter_connections_per_instance:
                assert time.monotonic() < deadline, f"only {slow.in_flight} slow requests reached Jupyter"
                await asyncio.sleep(0.05)
            start = time.monotonic()
            status = await one(f"/jupyter/{OTHER_UID}/api/status", other, live.content(OTHER_UID))
            took = time.monotonic() - start
            assert status == 200
            codes = await asyncio.gather(*held)
            return took, codes

    took, codes = asyncio.run(attack())
    assert took < 3.0, f"another instance's lab waited {took:.2f} s"  # behind the slow ones: 6 s
    # Never more than its share reached the instance; the rest was refused in words, not left hanging.
    assert slow.most_in_flight <= settings.jupyter_connections_per_instance
    assert set(codes) <= {200, 429, 503}, set(codes)
    assert codes.count(200) <= settings.jupyter_connections_per_instance
    assert codes.count(429) >= 300 - settings.jupyter_requests_per_lab
    assert 503 in codes


def test_a_lab_over_its_share_is_told_so(live: Live, world: World, upstreams) -> None:
    slow, _ = upstreams
    slow.slow_seconds = 5
    settings = _gateway(live)
    settings.jupyter_requests_per_lab, settings.jupyter_connections_per_instance = 2, 1
    settings.jupyter_wait_seconds = 0.5
    cookie = _lab_cookie(live, "owner", UID)
    port = int(live.base.rsplit(":", 1)[1])

    async def three() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=30) as client:
            headers = {"Host": live.content(), "Cookie": cookie}
            first = asyncio.create_task(client.get(f"/jupyter/{UID}/api/slow", headers=headers))
            await asyncio.sleep(0.5)
            waiting = asyncio.create_task(client.get(f"/jupyter/{UID}/api/status", headers=headers))
            await asyncio.sleep(0.1)
            refused = await client.get(f"/jupyter/{UID}/api/status", headers=headers)
            return [refused, await waiting, await first]

    refused, waited, first = asyncio.run(three())
    assert refused.status_code == 429 and refused.json()["error"] == "rate_limited", refused.text
    assert waited.status_code == 503 and waited.json()["error"] == "unavailable", waited.text
    assert first.status_code == 200


def test_a_jupyter_that_stops_sending_is_cut_off(live: Live, world: World, upstreams) -> None:
    slow, _ = upstreams
    slow.slow_seconds = 30
    _gateway(live).jupyter_idle_seconds = 1
    with live.login("owner") as client, live.open_lab(client) as lab:
        start = time.monotonic()
        r = lab.get(f"/jupyter/{UID}/api/slow")
        assert r.status_code == 504 and r.json()["error"] == "unavailable", r.text
        with pytest.raises(httpx.HTTPError):  # a body begun and then silent: the answer ends unfinished
            lab.get(f"/jupyter/{UID}/api/stall")
        assert time.monotonic() - start < 10


def test_a_gzip_bomb_page_is_cut_at_a_bound(live: Live, world: World, upstreams) -> None:
    slow, _ = upstreams
    slow.bomb_bytes = 1024**3  # 1 GiB of page, about 1 MB on the wire
    bound = 4 * 1024**2
    _gateway(live).jupyter_page_bytes = bound
    with live.login("owner") as client, live.open_lab(client) as lab:
        received = 0
        try:
            with lab.stream("GET", f"/jupyter/{UID}/api/bomb") as r:
                assert r.status_code == 200
                for chunk in r.iter_raw():
                    received += len(chunk)
        except httpx.HTTPError:
            pass  # cut short: the end of the answer is missing
        assert 0 < received <= bound + 65536, received


def test_connect_is_rate_limited_per_user(live: Live, world: World) -> None:
    _gateway(live).connects_per_minute = 3
    with live.login("owner") as client:
        codes = [client.post(f"/api/instances/{UID}/connect").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429], codes
        r = client.post(f"/api/instances/{UID}/connect")
        assert r.json()["error"] == "rate_limited" and r.json()["details"]["retry_after"] > 0
    with live.login("guest") as other:  # another user has a count of their own
        assert other.post(f"/api/instances/{UID}/connect").status_code == 200


def _lab_ws(live: Live, cookie: str, uid: str = UID):
    port = int(live.base.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    return connect(f"ws://{live.content(uid)}/jupyter/{uid}/api/events/subscribe", sock=sock, open_timeout=10,
                   additional_headers={"Cookie": cookie}, origin=f"http://{live.content(uid)}")


def _refusal(live: Live, cookie: str, uid: str = UID) -> tuple[int, str]:
    with pytest.raises(InvalidStatus) as info:
        _lab_ws(live, cookie, uid).close()
    response = info.value.response
    return response.status_code, response.body.decode()


def test_open_lab_connections_are_capped_per_user_and_per_instance(live: Live, world: World) -> None:
    settings = _gateway(live)
    settings.max_connections_per_user, settings.max_connections_per_instance = 2, 3
    owner = _lab_cookie(live, "owner", UID)
    stranger = _lab_cookie(live, "stranger", OTHER_UID)
    opened = [_lab_ws(live, owner), _lab_ws(live, owner)]
    try:
        for ws in opened:
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
        status, body = _refusal(live, owner)
        assert status == 429 and "rate_limited" in body and "connections" in body, (status, body)
        with _lab_ws(live, stranger, OTHER_UID) as ws:  # another user's count is theirs
            ws.send("x")
            assert ws.recv(timeout=10) == "x"
        # Once one is closed, the owner may open another.
        opened.pop(0).close()
        deadline = time.monotonic() + 5
        while True:
            try:
                opened.append(_lab_ws(live, owner))
                break
            except InvalidStatus:
                assert time.monotonic() < deadline, "the closed connection still counts"
                time.sleep(0.1)
        settings.max_connections_per_user = 10
        opened.append(_lab_ws(live, owner))  # the instance's third
        status, body = _refusal(live, owner)
        assert status == 503 and "unavailable" in body and "instance" in body, (status, body)
    finally:
        for ws in opened:
            ws.close()


# ---------------------------------------------------------------- the table of upstream pools


def test_the_table_of_upstream_pools_is_bounded_and_evicts(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from visa.gateway import relay

    async def run(ups: list[HostileUpstream]) -> None:
        transport = relay.UpstreamTransport(connections=2, max_pools=2, idle_seconds=1.0)
        async with httpx.AsyncClient(transport=transport, trust_env=False, timeout=10) as client:
            for up in ups:
                assert (await client.get(f"http://127.0.0.1:{up.port}/api/status")).status_code == 200
            # The least recently used pool went, and its kept-alive connection with it.
            assert len(transport) == 2
            assert [up.connections for up in ups] == [0, 1, 1]
            # An answer still being read keeps its pool, whatever the bound.
            async with client.stream("GET", f"http://127.0.0.1:{ups[0].port}/api/stall") as stalled:
                body = stalled.aiter_raw()
                assert await body.__anext__() == b"begun"
                await client.get(f"http://127.0.0.1:{ups[1].port}/api/status")
                await client.get(f"http://127.0.0.1:{ups[2].port}/api/status")
                assert ups[0].connections == 1 and len(transport) == 2
            # Unused for idle_seconds: closed at the next request.
            await asyncio.sleep(1.2)
            await client.get(f"http://127.0.0.1:{ups[2].port}/api/status")
            await asyncio.sleep(0.2)
            assert len(transport) == 1 and [up.connections for up in ups] == [0, 0, 1]

    with hostile_upstream() as a, hostile_upstream() as b, hostile_upstream() as c:
        asyncio.run(run([a, b, c]))

    # The names made up for unix sockets are bounded too: the least recently used go first.
    monkeypatch.setattr(relay, "SOCKET_HOSTS_MAX", 3)
    monkeypatch.setattr(relay, "_SOCKET_HOSTS", relay.collections.OrderedDict())
    origins = [relay.http_origin(SimpleNamespace(socket=f"/run/s{i}")) for i in range(5)]
    relay.http_origin(SimpleNamespace(socket="/run/s2"))  # used again: kept
    relay.http_origin(SimpleNamespace(socket="/run/s5"))
    assert list(relay._SOCKET_HOSTS.values()) == ["/run/s4", "/run/s2", "/run/s5"]
    assert origins[0].removeprefix("http://") not in relay._SOCKET_HOSTS
