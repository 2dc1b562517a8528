"""The owner's display settings (keyboard layout, screen size) reaching a running machine.

Called when the owner connects (``gateway/api.py``), with the values as stored. The local
cloud's provider applies them itself (``Provider.apply_display``); a virtual machine gets them
through its root helper over the pinned SSH channel (the ``display`` verb of
``provisioning/files/assign.py``): the layout at once, the size at the desktop's next start.
What a machine last took is remembered (``provider_state["display"]``), so a connection with
nothing changed costs no SSH round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from visa.errors import CloudError
from visa.instances.models import Instance
from visa.instances.warm import channel_of, target_of
from visa.provisioning.warm import display_document
from visa.services import Services

KEY = "display"


@dataclass(frozen=True)
class Display:
    """What the owner connects with, read in the request's transaction."""

    uid: str
    cloud: str
    cloud_kind: str
    server_id: str | None
    address: str | None
    provider_state: dict[str, Any]
    width: int
    height: int
    keyboard_layout: str

    @classmethod
    def of(cls, instance: Instance) -> Display:
        return cls(instance.uid, instance.cloud.name, instance.cloud.kind, instance.cloud_server_id,
                   instance.address, dict(instance.provider_state or {}), instance.screen_width,
                   instance.screen_height, instance.keyboard_layout)

    @property
    def values(self) -> list[Any]:
        return [self.width, self.height, self.keyboard_layout]


def given_at_boot(instance: Instance) -> None:
    """The machine booted (or was given its owner) with the instance's values: nothing to send."""
    instance.provider_state = {**(instance.provider_state or {}),
                               KEY: [instance.screen_width, instance.screen_height, instance.keyboard_layout]}


def apply(services: Services, display: Display) -> None:
    """Give the machine the values it lacks. Raises CloudError when it does not take them
    (callers log it: the connection goes on)."""
    if display.server_id is None:
        return
    if display.cloud_kind == "local":
        services.provider(display.cloud).apply_display(
            display.server_id, width=display.width, height=display.height, keyboard_layout=display.keyboard_layout)
        return
    if display.provider_state.get(KEY) == display.values:
        return
    target = target_of(display.uid, display.address, display.provider_state)
    document = display_document(display.width, display.height, display.keyboard_layout)
    if target is None or not channel_of(services)(target, document):
        raise CloudError("the machine did not take the display settings")
    with services.database.unit_of_work() as s:
        instance = s.scalar(select(Instance).where(Instance.uid == display.uid))
        if instance is not None:
            instance.provider_state = {**(instance.provider_state or {}), KEY: display.values}
