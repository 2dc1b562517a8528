"""Fault-injecting clouds for tests: slow, broken, never ready, and one held in memory.

Doubles, not the real thing, because the faults they inject cannot be had on demand from a
real cloud here: a Keystone that takes seconds to answer, one that fails, a machine the cloud
runs whose desktop never answers, servers visa did not create. Everything else is tested on
the real local cloud (and on the OpenStack sandbox).
"""

from __future__ import annotations

import socket
import time

from visa.clouds.base import CloudLimits, Provider, Server, ServerSpec
from visa.clouds.local import LocalProvider
from visa.states import InstanceState


class SlowCloud(LocalProvider):
    """The local cloud, except that asking for its limits takes 5 seconds."""

    def limits(self) -> CloudLimits:
        time.sleep(5)
        return CloudLimits()


class BrokenCloud(LocalProvider):
    """The local cloud, except that asking for its limits fails."""

    def limits(self) -> CloudLimits:
        raise RuntimeError("keystone says no")


class InMemoryCloud(Provider):
    """A cloud that holds the servers it is given, and records what it deleted."""

    kind = "fake"

    def __init__(self, servers: list[Server] = (), name: str = "local") -> None:  # type: ignore[assignment]
        super().__init__(name, {})
        self.servers = {s.id: s for s in servers}
        self.deleted: list[str] = []

    def create(self, spec: ServerSpec) -> Server:
        raise NotImplementedError

    def get(self, server_id: str) -> Server | None:
        return self.servers.get(server_id)

    def list_servers(self) -> list[Server]:
        return list(self.servers.values())

    def start(self, server_id: str) -> None: ...

    def stop(self, server_id: str) -> None: ...

    def reboot(self, server_id: str) -> None: ...

    def delete(self, server_id: str) -> None:
        self.servers.pop(server_id, None)
        self.deleted.append(server_id)


class NeverReadyCloud(InMemoryCloud):
    """A cloud whose machines run (ACTIVE) but whose desktop never answers: every protocol's port
    is one that is bound on loopback and never listened on, so a connection is refused at once."""

    def __init__(self, name: str = "local") -> None:
        super().__init__([], name)
        self._silent = socket.socket()
        self._silent.bind(("127.0.0.1", 0))  # held, never listening: no one else can take the port
        self.silent_port = int(self._silent.getsockname()[1])

    def running(self, server_id: str, instance_uid: str, protocols: tuple[str, ...] = ("VNC",)) -> Server:
        server = Server(
            server_id, f"visa-{instance_uid}", InstanceState.ACTIVE, address="127.0.0.1",
            ports=dict.fromkeys(protocols, self.silent_port), instance_uid=instance_uid,
        )
        self.servers[server_id] = server
        return server

    def create(self, spec: ServerSpec) -> Server:
        return self.running(f"srv-{spec.instance_uid}", spec.instance_uid, tuple(spec.protocols))

    def close(self) -> None:
        self._silent.close()
