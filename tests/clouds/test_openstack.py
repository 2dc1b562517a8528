"""The OpenStack provider against a real (sandboxed) Keystone, Nova, Glance and Neutron."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.clouds.conftest import sandbox
from visa.clouds.base import VISA_TAG, Server, ServerSpec
from visa.clouds.openstack import OpenStackProvider
from visa.clouds.reconcile import reconcile
from visa.errors import CloudError
from visa.instances.models import InstanceState

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

IMAGE = "visa-sandbox-image"
# Paging is proved with a small fleet and small pages: 40 servers in pages of 10 show "one
# request per page, never one per server" as 200 in pages of 50 would, in a fraction of the time.
FLEET_SIZE = 40
PAGE = 10


def spec(name: str, uid: str, **overrides: Any) -> ServerSpec:
    values: dict[str, Any] = {
        "name": name,
        "instance_uid": uid,
        "image_ref": IMAGE,
        "flavour_ref": "esrf.medium",
        "user_data": "#cloud-config\nhostname: visa\n",
        "secret": "not-logged",
        "metadata": {"owner": "alice", "experiments": "ev280"},
    }
    values.update(overrides)
    return ServerSpec(**values)


def wait_for(
    provider: OpenStackProvider, server_id: str, *states: InstanceState | None, timeout: float = 120
) -> Server | None:
    deadline = time.monotonic() + timeout
    while True:
        server = provider.get(server_id)
        current = None if server is None else server.state
        if current in states:
            return server
        if time.monotonic() > deadline:
            raise AssertionError(f"server {server_id} is {current}, not {states} after {timeout} s")
        time.sleep(0.5)


def compute_calls(provider: OpenStackProvider) -> list[str]:
    """Record every HTTP request the provider makes to Nova from now on."""
    endpoint = provider.conn.compute.get_endpoint().rstrip("/")
    seen: list[str] = []

    def hook(response: Any, *args: Any, **kwargs: Any) -> None:
        if response.url.startswith(endpoint):
            seen.append(f"{response.request.method} {response.url}")

    provider.conn.session.session.hooks["response"].append(hook)
    return seen


# ------------------------------------------------------------------ one server's life


def test_lifecycle_create_stop_start_reboot_delete(make_provider: Callable[..., OpenStackProvider]) -> None:
    provider = make_provider()
    created = provider.create(spec("life", "life-uid"))
    assert created.state is InstanceState.BUILDING
    assert created.name == f"{make_provider.prefix}life"  # type: ignore[attr-defined]

    server = wait_for(provider, created.id, InstanceState.ACTIVE)
    assert server is not None
    assert server.instance_uid == "life-uid"
    assert server.address and server.address.startswith("127.100.")
    raw = provider.conn.compute.get_server(created.id)
    assert raw.tags == [VISA_TAG]
    assert raw.metadata == {"owner": "alice", "experiments": "ev280", VISA_TAG: "life-uid"}
    assert [g["name"] for g in raw.security_groups] == ["default"]
    assert created.id in {s.id for s in provider.list_servers()}

    provider.stop(created.id)
    wait_for(provider, created.id, InstanceState.STOPPED)
    provider.stop(created.id)  # again: nothing to do, no error
    assert wait_for(provider, created.id, InstanceState.STOPPED) is not None

    provider.start(created.id)
    wait_for(provider, created.id, InstanceState.ACTIVE)
    provider.start(created.id)
    assert provider.get(created.id).state is InstanceState.ACTIVE  # type: ignore[union-attr]

    provider.reboot(created.id)
    assert provider.get(created.id).state in (InstanceState.REBOOTING, InstanceState.ACTIVE)  # type: ignore[union-attr]
    wait_for(provider, created.id, InstanceState.ACTIVE)

    provider.delete(created.id)
    assert wait_for(provider, created.id, None) is None
    provider.delete(created.id)  # a missing server: nothing to do
    assert created.id not in {s.id for s in provider.list_servers()}


def test_reboot_of_a_stopped_server_starts_it(make_provider: Callable[..., OpenStackProvider]) -> None:
    provider = make_provider()
    created = provider.create(spec("reboot", "reboot-uid", flavour_ref="visa.tiny"))
    wait_for(provider, created.id, InstanceState.ACTIVE)
    provider.stop(created.id)
    wait_for(provider, created.id, InstanceState.STOPPED)
    provider.reboot(created.id)
    wait_for(provider, created.id, InstanceState.ACTIVE)


def test_start_of_a_missing_server_says_so(make_provider: Callable[..., OpenStackProvider]) -> None:
    provider = make_provider()
    with pytest.raises(CloudError) as info:
        provider.start("00000000-0000-0000-0000-000000000000")
    assert info.value.details["reason"] == "not_found"
    assert provider.get("00000000-0000-0000-0000-000000000000") is None


# ------------------------------------------------------------------ errors a user reads


def test_missing_image_and_flavour(make_provider: Callable[..., OpenStackProvider]) -> None:
    provider = make_provider()
    with pytest.raises(CloudError) as info:
        provider.create(spec("noimage", "u1", image_ref="no-such-image"))
    assert info.value.details["reason"] == "image_not_found"
    assert "no-such-image" in info.value.message and not info.value.transient
    with pytest.raises(CloudError) as info:
        provider.create(spec("noflavour", "u2", flavour_ref="esrf.huge"))
    assert info.value.details["reason"] == "flavour_not_found"
    assert "esrf.huge" in info.value.message


def test_quota_exceeded(make_provider: Callable[..., OpenStackProvider]) -> None:
    # visa-full: a project whose instance quota is 0.
    provider = make_provider(project_name="visa-full", network="none")
    with pytest.raises(CloudError) as info:
        provider.create(spec("over", "u3"))
    assert info.value.details["reason"] == "quota_exceeded"
    assert "Quota exceeded" in info.value.message and not info.value.transient
    assert provider.limits().max_instances == 0


def test_no_valid_host_is_reported_on_the_server(make_provider: Callable[..., OpenStackProvider]) -> None:
    provider = make_provider()
    created = provider.create(spec("nohost", "u4", flavour_ref="visa.nohost"))
    server = wait_for(provider, created.id, InstanceState.ERROR)
    assert server is not None and server.fault is not None
    assert server.fault.startswith("No hypervisor can take this machine")


def test_catalogue(make_provider: Callable[..., OpenStackProvider]) -> None:
    provider = make_provider()
    flavours = {f.name: f.details for f in provider.flavours()}
    assert flavours["esrf.medium"]["cores"] == 4 and flavours["esrf.medium"]["memory_mb"] == 4096
    assert flavours["esrf.large"]["memory_mb"] == 16384
    assert flavours["esrf.gpu.a40.xlarge"]["cores"] == 32
    assert IMAGE in {i.name for i in provider.images()}
    assert "visa-net" in {n.name for n in provider.networks()}
    assert "default" in {g.name for g in provider.security_groups()}
    assert provider.limits().max_instances is None  # unlimited in the visa project


# ------------------------------------------------------------------ orphans


def test_orphan_found_and_missing_reported(make_provider: Callable[..., OpenStackProvider]) -> None:
    provider = make_provider()
    prefix = make_provider.prefix  # type: ignore[attr-defined]
    known = provider.create(spec("known", "known-uid", flavour_ref="visa.tiny"))
    orphan = provider.create(spec("orphan", "orphan-uid", flavour_ref="visa.tiny"))
    gone = "00000000-0000-0000-0000-00000000dead"

    ours = [s for s in provider.list_servers() if s.name.startswith(prefix)]
    result = reconcile(ours, [known.id, gone])
    assert [s.id for s in result.orphans] == [orphan.id]
    assert result.orphans[0].instance_uid == "orphan-uid"
    assert result.missing == [gone]
    assert set(result.present) == {known.id}

    # A create whose answer was lost: the uid is known, so the server is adopted, not deleted.
    result = reconcile(ours, [known.id], known_uids=["orphan-uid"])
    assert result.adoptable["orphan-uid"].id == orphan.id and not result.orphans

    # Deleted behind visa's back: missing at the next sync.
    provider.delete(known.id)
    wait_for(provider, known.id, None)
    ours = [s for s in provider.list_servers() if s.name.startswith(prefix)]
    assert reconcile(ours, [known.id, orphan.id]).missing == [known.id]


# ------------------------------------------------------------------ a fleet


@dataclass
class Fleet:
    prefix: str
    ids: set[str]


@pytest.fixture(scope="module")
def fleet(openstack_sandbox: dict[str, Any], run_prefix: str) -> Iterator[Fleet]:
    """FLEET_SIZE tagged servers, made in one request (Nova's min/max count), all ACTIVE."""
    provider = OpenStackProvider("sandbox", openstack_sandbox)
    conn = provider.conn
    prefix = f"{run_prefix}fleet"
    conn.compute.create_server(
        name=prefix,
        image_id=conn.image.find_image(IMAGE).id,
        flavor_id=conn.compute.find_flavor("visa.tiny").id,
        networks="none",  # no Neutron port each: the fleet is about listing, and boots faster
        tags=[VISA_TAG],
        metadata={VISA_TAG: "fleet"},
        min_count=FLEET_SIZE,
        max_count=FLEET_SIZE,
    )
    # Nova's fake hypervisor builds ~0.2-1 servers/s on 2 busy cores.
    deadline = time.monotonic() + 1500
    while True:
        ours = [s for s in provider.list_servers() if s.name.startswith(prefix)]
        if len(ours) == FLEET_SIZE and all(s.state is InstanceState.ACTIVE for s in ours):
            break
        assert not [s for s in ours if s.state is InstanceState.ERROR], "a fleet server failed to build"
        assert time.monotonic() < deadline, "the fleet did not become ACTIVE in 25 minutes"
        time.sleep(10)  # each list of the whole fleet costs Nova a second or two
    yield Fleet(prefix, {s.id for s in ours})
    for server_id in {s.id for s in provider.list_servers() if s.name.startswith(prefix)}:
        provider.delete(server_id)
    deadline = time.monotonic() + 300
    while any(s.name.startswith(prefix) for s in provider.list_servers()) and time.monotonic() < deadline:
        time.sleep(3)
    provider.close()


def test_sync_of_a_fleet_is_one_list_call(fleet: Fleet, openstack_sandbox: dict[str, Any]) -> None:
    provider = OpenStackProvider("sandbox", openstack_sandbox)
    provider.list_servers()  # authentication and version discovery are not the sync's
    calls = compute_calls(provider)
    servers = provider.list_servers()
    ours = {s.id: s for s in servers if s.name.startswith(fleet.prefix)}
    assert set(ours) == fleet.ids
    assert all(s.state is InstanceState.ACTIVE and s.instance_uid == "fleet" for s in ours.values())
    assert len(calls) == 1, calls
    assert calls[0].startswith("GET ") and "/servers/detail?" in calls[0] and "tags=visa" in calls[0]

    # Smaller pages: one request per page, and never one per server.
    paged = OpenStackProvider("sandbox", {**openstack_sandbox, "page_size": PAGE})
    paged.list_servers()
    calls = compute_calls(paged)
    assert {s.id for s in paged.list_servers()} == {s.id for s in servers}
    assert len(calls) == len(servers) // PAGE + 1
    provider.close()
    paged.close()


def test_compute_api_killed_mid_sync(fleet: Fleet, openstack_sandbox: dict[str, Any]) -> None:
    provider = OpenStackProvider(
        "sandbox", {**openstack_sandbox, "page_size": PAGE, "timeout": 10}
    )
    before = {s.id: s.state for s in provider.list_servers() if s.id in fleet.ids}
    assert before.keys() == fleet.ids
    pages: list[str] = []

    def kill_after_first_page(response: Any, *args: Any, **kwargs: Any) -> None:
        if "/servers/detail" in response.url:
            pages.append(response.url)
            if len(pages) == 1:
                assert sandbox("kill", "nova-api").returncode == 0

    hooks = provider.conn.session.session.hooks["response"]
    hooks.append(kill_after_first_page)
    try:
        with pytest.raises(CloudError) as info:
            provider.list_servers()
    finally:
        hooks.remove(kill_after_first_page)
    assert len(pages) == 1  # page 1 came, then the API was gone
    assert info.value.transient and info.value.details["reason"] == "unavailable"
    with pytest.raises(CloudError) as info:
        provider.get(next(iter(fleet.ids)))
    assert info.value.transient

    restarted = sandbox("start", timeout=300)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    after = {s.id: s.state for s in provider.list_servers() if s.id in fleet.ids}
    assert after == before  # nothing lost, nothing changed
    result = reconcile(provider.list_servers(), fleet.ids)
    assert not result.missing and set(result.present) == fleet.ids
    provider.close()
