"""A starting machine whose console reports a failed boot step ends in a clear state.

The cloud here is a stand-in: a real cloud's console cannot be made to say these lines in
the fast tier (the OpenStack sandbox's fake hypervisor prints a fixed text). The desktop
that answers is a real listening socket; the one that does not is a closed port.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from tests.clouds.doubles import InMemoryCloud
from tests.services import add_instance
from visa.clock import FrozenClock
from visa.clouds.base import Server
from visa.commands import sync
from visa.commands.sync import sync_cloud
from visa.errors import CloudError
from visa.instances.models import Instance, InstanceState
from visa.services import Services

SETUP_FAILED = "[ 31.2] cloud-init[611]: visa: FAILED desktop-setup: setup-desktop exited with status 1\n"
MOUNT_FAILED = "[ 30.9] cloud-init[611]: visa: FAILED data-mount: not mounted: /data/ev280\n"


class ConsoleCloud(InMemoryCloud):
    def __init__(self, servers: list[Server], console: str | Exception | None) -> None:
        super().__init__(servers)
        self.console = console
        self.reads = 0

    def boot_report(self, server_id: str) -> str | None:
        self.reads += 1
        if isinstance(self.console, Exception):
            raise self.console
        return self.console


@pytest.fixture(autouse=True)
def _fresh_report_times() -> None:
    getattr(sync, "_last_report", {}).clear()  # ids restart with every test's database


@pytest.fixture
def desktop() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _starting(services: Services, world, clock: FrozenClock, cloud: ConsoleCloud, port: int) -> str:
    with services.database.unit_of_work() as s:
        inst = add_instance(s, clock, world, state=InstanceState.STARTING, cloud_server_id="srv-1")
        uid = inst.uid
    cloud.servers["srv-1"] = Server("srv-1", "visa-1", InstanceState.ACTIVE, address="127.0.0.1",
                                    ports={"VNC": port}, instance_uid=uid)
    services.set_provider("local", cloud)
    return uid


def _instance(services: Services, uid: str) -> Instance:
    with services.database.sessionmaker() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == uid))
        assert inst is not None
        return inst


def test_a_failed_desktop_step_ends_in_error_at_once_and_stays_there(services: Services, world,
                                                                     clock: FrozenClock) -> None:
    cloud = ConsoleCloud([], "booting\n" + SETUP_FAILED)
    uid = _starting(services, world, clock, cloud, _closed_port())
    sync_cloud(services, "local", probe_timeout=0.5)
    inst = _instance(services, uid)
    assert inst.state == InstanceState.ERROR
    assert "boot configuration failed" in inst.error_message and "desktop-setup" in inst.error_message
    sync._last_report.clear()
    sync_cloud(services, "local", probe_timeout=0.5)  # still silent: not back to STARTING
    assert _instance(services, uid).state == InstanceState.ERROR


def test_data_that_did_not_mount_leave_a_working_desktop_partly_active(services: Services, world,
                                                                       clock: FrozenClock, desktop: int) -> None:
    cloud = ConsoleCloud([], MOUNT_FAILED + "visa instance configured after 40 seconds\n")
    uid = _starting(services, world, clock, cloud, desktop)
    sync_cloud(services, "local", probe_timeout=0.5)
    inst = _instance(services, uid)
    assert inst.state == InstanceState.PARTIALLY_ACTIVE
    assert "data are not mounted" in inst.error_message and "ev280" in inst.error_message
    sync_cloud(services, "local", probe_timeout=0.5)  # its ports all answer: it keeps the message
    inst = _instance(services, uid)
    assert inst.state == InstanceState.PARTIALLY_ACTIVE and "ev280" in inst.error_message
    assert cloud.reads == 1  # the console is read only while the instance is starting


def test_a_clean_boot_becomes_active_and_the_console_is_read_sparingly(services: Services, world,
                                                                       clock: FrozenClock) -> None:
    cloud = ConsoleCloud([], MOUNT_FAILED)  # data missing, desktop not up yet: it may still come
    uid = _starting(services, world, clock, cloud, _closed_port())
    for _ in range(3):
        sync_cloud(services, "local", probe_timeout=0.5)
    assert _instance(services, uid).state == InstanceState.STARTING
    assert cloud.reads == 1  # at most every BOOT_REPORT_SECONDS

    cloud.console = "all fine\n"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        cloud.servers["srv-1"] = Server("srv-1", "visa-1", InstanceState.ACTIVE, address="127.0.0.1",
                                        ports={"VNC": listener.getsockname()[1]}, instance_uid=uid)
        sync_cloud(services, "local", probe_timeout=0.5)
    inst = _instance(services, uid)
    assert inst.state == InstanceState.ACTIVE and inst.error_message is None
    assert cloud.reads == 2  # read once more when the desktop first answered


def test_a_console_the_cloud_cannot_read_changes_nothing(services: Services, world,
                                                         clock: FrozenClock) -> None:
    cloud = ConsoleCloud([], CloudError("console unavailable", transient=True))
    uid = _starting(services, world, clock, cloud, _closed_port())
    sync_cloud(services, "local", probe_timeout=0.5)
    inst = _instance(services, uid)
    assert inst.state == InstanceState.STARTING and inst.error_message is None


def test_hostile_console_text_reaches_the_message_short_and_plain(services: Services, world,
                                                                  clock: FrozenClock) -> None:
    reason = "\x1b]0;owned\x07<img src=x onerror=alert(1)>\u202e" + "B" * 5000
    cloud = ConsoleCloud([], f"visa: FAILED desktop-setup: {reason}\n" * 50)
    uid = _starting(services, world, clock, cloud, _closed_port())
    sync_cloud(services, "local", probe_timeout=0.5)
    message = _instance(services, uid).error_message
    assert len(message) <= 600 and "\x1b" not in message and "\u202e" not in message and "\x07" not in message
