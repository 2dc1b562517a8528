"""Is the desktop answering? Cloud ACTIVE becomes visa ACTIVE only when the ports answer."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from visa.catalogue.models import Protocol
from visa.clouds.local.supervisor import socket_open
from visa.instances.models import Instance, InstanceState

PROBE_TIMEOUT = 5.0


def port_open(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False




def answers(instance: Instance, protocol: Protocol | str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether the protocol accepts connections: on the provider's unix socket or at its endpoint."""
    name = protocol.value if isinstance(protocol, Protocol) else protocol
    path = ((instance.provider_state or {}).get("sockets") or {}).get(name)
    if path:
        return socket_open(str(path), timeout)
    where = endpoint(instance, name)
    return where is not None and port_open(*where, timeout=timeout)


def endpoint(instance: Instance, protocol: Protocol | str) -> tuple[str, int] | None:
    """Where a protocol of the instance answers: the provider's port if it gave one, else the image's."""
    name = protocol.value if isinstance(protocol, Protocol) else protocol
    ports = (instance.provider_state or {}).get("ports") or {}
    port = ports.get(name) or instance.plan.image.port_of(Protocol(name))
    if not instance.address or not port:
        return None
    return instance.address, int(port)


def ready_state(instance: Instance, timeout: float = PROBE_TIMEOUT) -> InstanceState:
    """STARTING until the main protocol answers; PARTIALLY_ACTIVE while another required one does not."""
    required = [p.protocol for p in instance.plan.image.protocols if not p.optional]
    if not required:
        return InstanceState.ACTIVE
    main = Protocol.VNC if Protocol.VNC in required else required[0]
    ordered = [main] + [p for p in required if p != main]
    answered = [answers(instance, proto, timeout) for proto in ordered]
    if not answered[0]:
        return InstanceState.STARTING
    return InstanceState.ACTIVE if all(answered) else InstanceState.PARTIALLY_ACTIVE


def probe_all(instances: Iterable[Instance], timeout: float = PROBE_TIMEOUT, workers: int = 32) -> dict[int, InstanceState]:
    """Probe many instances at once: a slow machine must not hold up the others."""
    items = list(instances)
    if not items:
        return {}
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        states = pool.map(lambda i: ready_state(i, timeout), items)
        return {i.id: st for i, st in zip(items, states, strict=True)}
