"""The one retry layer: transient failures tried again with jittered backoff until one deadline per
call, other failures at once. The failures are real: a loopback port that refuses, one that accepts
and never answers; on the sandbox, a killed API that comes back (and refused credentials, tried once:
tests/clouds/test_openstack_credentials.py).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from visa.clouds.openstack import OpenStackProvider
from visa.clouds.retry import RetryPolicy
from visa.errors import CloudError


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _provider(port: int, **extra: Any) -> OpenStackProvider:
    return OpenStackProvider("down", {"auth_url": f"http://127.0.0.1:{port}/v3", "username": "visa",
                                      "password": "x", "project_name": "visa", **extra})


def counted(call: Callable[[], Any]) -> tuple[Callable[[], Any], list[float]]:
    tries: list[float] = []

    def run() -> Any:
        tries.append(time.monotonic())
        return call()

    return run, tries


def test_a_refusing_cloud_is_tried_until_the_deadline_then_fails_transient() -> None:
    provider = _provider(_closed_port())
    call, tries = counted(provider.list_servers)
    policy = RetryPolicy(deadline=2.0, first_delay=0.2, max_delay=0.8)
    started = time.monotonic()
    with pytest.raises(CloudError) as info:
        policy.run(call)
    elapsed = time.monotonic() - started
    assert info.value.transient and info.value.details["reason"] == "unavailable"
    assert info.value.details["attempts"] == len(tries) >= 3
    assert elapsed < 2.0 + 0.5  # no try starts after the deadline (a refused connection is quick)
    assert elapsed > 2.0 - 0.8  # and it did not give up early: the next wait would have passed it
    waits = [b - a for a, b in zip(tries, tries[1:], strict=False)]
    assert all(w >= 0.1 for w in waits)  # waits of at least half the first delay
    provider.close()


def test_a_silent_cloud_costs_the_deadline_plus_one_request_timeout_at_most() -> None:
    # It accepts connections and never answers: each try ends at the request timeout.
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(16)
        provider = _provider(blackhole.getsockname()[1], timeout=1)
        call, tries = counted(provider.limits)
        started = time.monotonic()
        with pytest.raises(CloudError) as info:
            RetryPolicy(deadline=2.5, first_delay=0.2).run(call)
        elapsed = time.monotonic() - started
        provider.close()
    assert info.value.transient and info.value.details["reason"] == "timeout"
    assert len(tries) >= 2 and elapsed < 2.5 + 1 + 0.5


def test_waits_grow_jittered_and_capped() -> None:
    waits: list[float] = []
    clock = [0.0]

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    def fail() -> None:
        raise CloudError("down", transient=True)

    with pytest.raises(CloudError):
        RetryPolicy(deadline=60, first_delay=1, max_delay=8).run(fail, sleep=sleep, monotonic=lambda: clock[0])
    ceilings = [1, 2, 4, 8, 8, 8, 8, 8, 8, 8, 8]
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=False))
    assert sum(waits) <= 60 and len(waits) >= 6


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_killed_compute_api_that_comes_back_within_the_deadline(openstack_sandbox: dict[str, Any]) -> None:
    from tests.clouds.conftest import sandbox

    provider = OpenStackProvider("sandbox", {**openstack_sandbox, "timeout": 10})
    provider.list_servers()  # authenticated, the endpoints known
    assert sandbox("kill", "nova-api").returncode == 0
    restarted: list[int] = []
    starter = threading.Thread(target=lambda: (time.sleep(2), restarted.append(sandbox("start", timeout=300).returncode)))
    call, tries = counted(provider.list_servers)
    started = time.monotonic()
    starter.start()
    try:
        servers = RetryPolicy(deadline=240, first_delay=0.5, max_delay=5).run(call)
    finally:
        starter.join()
    assert restarted == [0]
    assert isinstance(servers, list) and len(tries) >= 2  # it failed while the API was down, then came through
    assert time.monotonic() - started < 240
    provider.close()


def test_a_command_on_a_down_cloud_frees_its_slot_at_the_deadline(committed_db, clock, tmp_path, caplog) -> None:
    """The executor's retries are this layer's: a start on a cloud that refuses connections fails
    after ``scheduler.cloud_call_seconds``, not after tries multiplied at two levels."""
    from datetime import timedelta

    from tests.factories import make_cloud, make_flavour, make_image, make_plan, make_user
    from visa.catalogue.models import Protocol
    from visa.commands.executor import run_pending_commands
    from visa.instances.models import CommandAction, CommandState, Instance, InstanceCommand, InstanceState
    from visa.services import Services
    from visa.settings import SchedulerSettings, Settings

    settings = Settings(data_dir=tmp_path / "data", database_url=committed_db.url, secret_key="k",
                        scheduler=SchedulerSettings(cloud_call_seconds=2.0))
    services = Services(settings=settings, database=committed_db, clock=clock)
    with committed_db.unit_of_work() as s:
        cloud = make_cloud(s, clock, "down", kind="openstack")
        cloud.config = {"auth_url": f"http://127.0.0.1:{_closed_port()}/v3", "username": "visa", "password": "x",
                        "project_name": "visa"}
        plan = make_plan(s, make_image(s, "desktop", {Protocol.VNC: 5901}), make_flavour(s, "small"))
        inst = Instance(uid="down00000001", name="down", owner=make_user(s, clock, "owner"), plan=plan, cloud=cloud,
                        state=InstanceState.STOPPED, secret="s" * 24, cloud_server_id="srv-1",
                        created_at=clock.now(), terminates_at=clock.now() + timedelta(days=1))
        s.add(inst)
        s.flush()
        s.add(InstanceCommand(instance_id=inst.id, action=CommandAction.START, state=CommandState.PENDING,
                              created_at=clock.now()))
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="visa.clouds.retry"):
        assert run_pending_commands(services) == 1
    elapsed = time.monotonic() - started
    with committed_db.sessionmaker() as s:
        from sqlalchemy import select

        cmd = s.scalar(select(InstanceCommand))
        assert cmd is not None and cmd.state == CommandState.FAILED
        assert "cannot be reached" in (cmd.message or "")
    assert elapsed < 2.0 + 1.5
    assert sum("transient failure" in r.getMessage() for r in caplog.records) >= 2  # it did try again
    services.close()
