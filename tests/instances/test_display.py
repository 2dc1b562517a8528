"""The owner's display settings reach a virtual machine through its helper (instances/display.py):
once per change, remembered; a machine that does not take them raises (the connection goes on).

The helper's channel is a double (no machine behind these rows); the real helper takes the
``display`` verb on a real VM in tests/clouds/test_real_vm.py."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from tests.factories import make_cloud
from tests.services import add_instance
from visa.errors import CloudError
from visa.instances import display
from visa.instances.helper import HelperTarget
from visa.instances.models import Instance


class Channel:
    def __init__(self) -> None:
        self.sent: list[tuple[HelperTarget, dict[str, Any]]] = []
        self.answer = True

    def __call__(self, target: HelperTarget, document: dict[str, Any]) -> bool:
        self.sent.append((target, document))
        return self.answer


def test_a_change_is_sent_once_and_remembered(services, world, clock) -> None:
    channel = Channel()
    services.warm_channel = channel
    with services.database.unit_of_work() as s:
        cloud = make_cloud(s, clock, "vms", kind="openstack")
        inst = add_instance(s, clock, world, cloud_id=cloud.id, cloud_server_id="srv-1", address="10.0.0.5",
                            keyboard_layout="en-us")
        display.given_at_boot(inst)
        inst.keyboard_layout = "fr-fr"
        first = display.Display.of(inst)
        uid = inst.uid
    display.apply(services, first)
    assert channel.sent == [(HelperTarget(uid, "10.0.0.5", 22), {"verb": "display", "geometry": "1280x800",
                                                                 "xkb_layout": "fr", "xkb_variant": ""})]
    with services.database.sessionmaker() as s:
        again = display.Display.of(s.scalar(select(Instance).where(Instance.uid == uid)))
    display.apply(services, again)
    assert len(channel.sent) == 1  # nothing changed since: no round trip

    channel.answer = False
    with services.database.unit_of_work() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == uid))
        inst.screen_width = 1920
        changed = display.Display.of(inst)
    with pytest.raises(CloudError):
        display.apply(services, changed)
    with services.database.sessionmaker() as s:  # not remembered: sent again at the next connection
        assert s.scalar(select(Instance).where(Instance.uid == uid)).provider_state["display"] == [1280, 800, "fr-fr"]
