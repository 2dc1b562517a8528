"""A machine the cloud runs whose desktop never answers ends in ERROR, not STARTING for ever
(the same path as the OpenStack sandbox's real boot test, on a cloud that never gets ready)."""

from __future__ import annotations

from sqlalchemy import select

from tests.clouds.doubles import NeverReadyCloud
from tests.services import add_instance
from visa.clock import FrozenClock
from visa.commands.sync import sync_cloud
from visa.instances.models import Instance, InstanceState
from visa.services import Services


def _state(services: Services, uid: str) -> Instance:
    with services.database.sessionmaker() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == uid))
        assert inst is not None
        return inst


def test_a_desktop_that_never_answers_ends_in_error(services: Services, world, clock: FrozenClock) -> None:
    cloud = NeverReadyCloud()
    services.set_provider("local", cloud)
    try:
        with services.database.unit_of_work() as s:
            uid = add_instance(s, clock, world, state=InstanceState.STARTING, cloud_server_id="srv-1").uid
        cloud.running("srv-1", uid)
        timeout = services.settings.provisioning.boot_timeout_seconds

        sync_cloud(services, "local", probe_timeout=0.5)
        assert _state(services, uid).state == InstanceState.STARTING  # the cloud runs it, the desktop is silent
        clock.advance(seconds=timeout - 30)
        sync_cloud(services, "local", probe_timeout=0.5)
        assert _state(services, uid).state == InstanceState.STARTING  # booting may take this long

        clock.advance(seconds=60)
        sync_cloud(services, "local", probe_timeout=0.5)
        inst = _state(services, uid)
        assert inst.state == InstanceState.ERROR
        assert f"desktop did not answer within {timeout // 60} minutes" in (inst.error_message or "")
        clock.advance(minutes=5)
        sync_cloud(services, "local", probe_timeout=0.5)
        assert _state(services, uid).state == InstanceState.ERROR  # no flapping back to STARTING
    finally:
        cloud.close()
