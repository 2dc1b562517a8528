"""Nova's fake hypervisor, sized for thousands of servers and surviving its own restarts.

FakeDriver keeps its guests in memory only: after ``sandbox.sh stop``/``start`` Nova would
find them gone and mark every server SHUTOFF. We keep the guest list in a JSON file under
Nova's ``state_path`` instead.

FakeDriver also makes up a new node uuid in every process and never writes Nova's node
identity file (``state_path/compute_id``): a restarted nova-compute then finds its service
record and refuses to start ("No local node identity found, but this is not our first
startup"). Like a real single-node driver, this one takes its node uuid from that file (made
at the first start) so the compute node and its resource provider keep their identity.

GPUs: the host offers ``GPU_CLASS`` (``GPUS`` of them at first) and the GPU flavours ask for
it (``resources:CUSTOM_GPU_A40``). An inventory of a custom class set on the provider through
Placement's API (a test using them up, an operator) is kept as it is: the driver reports
only the classes it owns.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import nova.virt.node
from nova.conf import CONF
from nova.virt import fake

GPU_CLASS = "CUSTOM_GPU_A40"
GPUS = 4


class SandboxDriver(fake.FakeDriver):
    vcpus = 1_000_000
    memory_mb = 1_000_000_000
    local_gb = 100_000_000

    def __init__(self, virtapi: Any, read_only: bool = False) -> None:
        super().__init__(virtapi, read_only)
        self._store = os.path.join(CONF.state_path, "sandbox-guests.json")
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        try:
            with open(self._store) as fh:
                saved = json.load(fh)
        except (OSError, ValueError):
            return
        for uuid, (name, state) in saved.items():
            self.instances[uuid] = fake.FakeInstance(name, state, uuid)

    def _save(self) -> None:
        with self._lock:
            data = {uuid: (i.name, i.state) for uuid, i in list(self.instances.items())}
            tmp = self._store + ".tmp"
            with open(tmp, "w") as fh:
                json.dump(data, fh)
            os.replace(tmp, self._store)

    # ------------------------------------------------------------ node identity

    def get_available_resource(self, nodename: str) -> dict[str, Any]:
        resources = super().get_available_resource(nodename)
        if resources:
            resources["uuid"] = nova.virt.node.get_local_node_uuid()
        return resources

    def get_nodenames_by_uuid(self, refresh: bool = False) -> dict[str, str]:
        return {nova.virt.node.get_local_node_uuid(): self.get_available_nodes()[0]}

    def update_provider_tree(self, provider_tree: Any, nodename: str, allocations: Any = None) -> None:
        before = dict(provider_tree.data(nodename).inventory)
        super().update_provider_tree(provider_tree, nodename, allocations)
        inventory = dict(provider_tree.data(nodename).inventory)
        for rc, record in before.items():
            if rc.startswith("CUSTOM_") or rc in ("VGPU", "PCI_DEVICE"):
                inventory.setdefault(rc, record)  # set through Placement: not ours to undo
        inventory.setdefault(GPU_CLASS, {
            "total": GPUS, "reserved": 0, "min_unit": 1, "max_unit": GPUS, "step_size": 1,
            "allocation_ratio": 1.0,
        })
        provider_tree.update_inventory(nodename, inventory)

    # ------------------------------------------------------------ guests

    def spawn(self, *args: Any, **kwargs: Any) -> None:
        super().spawn(*args, **kwargs)
        self._save()

    def power_off(self, *args: Any, **kwargs: Any) -> None:
        super().power_off(*args, **kwargs)
        self._save()

    def power_on(self, *args: Any, **kwargs: Any) -> None:
        super().power_on(*args, **kwargs)
        self._save()

    def destroy(self, *args: Any, **kwargs: Any) -> None:
        super().destroy(*args, **kwargs)
        self._save()
