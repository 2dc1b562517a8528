"""An ML2 mechanism driver that binds every port, so Nova can boot with no L2 agent running.

The fast sandbox binds VIF type ``ovs`` (its fake hypervisor plugs nothing). The real one
(``VISA_OS_SANDBOX_REAL=1``) binds ``tap`` (Nova no longer plugs Linux bridges): Nova's
libvirt driver makes each VM's tap and ``tapbridge`` puts it on the namespace's bridge.
"""

from __future__ import annotations

import os

from neutron_lib.api.definitions import portbindings
from neutron_lib.plugins.ml2 import api


class BindAllMechanismDriver(api.MechanismDriver):
    def initialize(self) -> None:
        self.real = os.environ.get("VISA_OS_SANDBOX_REAL") == "1"

    def bind_port(self, context: api.PortContext) -> None:
        for segment in context.segments_to_bind:
            # The first segment is enough: one network, no agent.
            if self.real:
                # Nova makes the tap; the sandbox's tapbridge puts it on the bridge.
                context.set_binding(segment[api.ID], portbindings.VIF_TYPE_TAP, {portbindings.CAP_PORT_FILTER: False})
            else:
                context.set_binding(
                    segment[api.ID],
                    portbindings.VIF_TYPE_OVS,
                    {portbindings.CAP_PORT_FILTER: True},
                )
            return
