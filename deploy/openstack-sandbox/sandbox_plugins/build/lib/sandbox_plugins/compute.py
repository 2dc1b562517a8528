"""Nova's fake hypervisor, sized for thousands of servers and surviving its own restarts.

FakeDriver keeps its guests in memory only: after ``sandbox.sh stop``/``start`` Nova would
find them gone and mark every server SHUTOFF. We keep the guest list in a JSON file under
Nova's ``state_path`` instead.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from nova.conf import CONF
from nova.virt import fake


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
