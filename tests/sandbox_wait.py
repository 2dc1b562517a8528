"""Waiting on the OpenStack sandbox (deploy/openstack-sandbox/README.md) for what its browser tests
read: Nova's scheduling of the servers a module made (Placement counts them only then),
Placement's own figures as visa's administrators see them, and the servers' deletion (their GPUs
go back to the other tests sharing the sandbox). Each module names its servers with a prefix of
its own; only those are waited for or deleted."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx


def _provider(credentials: dict[str, Any], prefix: str) -> Any:
    from visa.clouds.openstack import OpenStackProvider

    return OpenStackProvider("sandbox", {**credentials, "name_prefix": prefix})


def wait_scheduled(credentials: dict[str, Any], prefix: str, count: int, log: Path, timeout: float = 90) -> None:
    """Until Nova has placed (or refused) at least ``count`` servers named with ``prefix``, every one
    of them; fails with them and the end of visa's ``log`` after ``timeout`` seconds."""
    from visa.states import InstanceState

    provider = _provider(credentials, prefix)
    try:
        deadline = time.monotonic() + timeout
        while True:
            mine = [s for s in provider.list_servers() if s.name.startswith(prefix)]
            if len(mine) >= count and all(s.state != InstanceState.BUILDING for s in mine):
                return
            assert time.monotonic() < deadline, (mine, log.read_text()[-3000:])
            time.sleep(0.5)
    finally:
        provider.close()


def placement_free(admin: httpx.Client, cloud: str, resource_class: str) -> int | None:
    """The units of a pool Placement says are free, as the administrators' pool view shows them
    (``admin``: a client logged in as an administrator); None when the pool is not listed."""
    clouds = admin.get("/api/admin/gpus").json()
    pools = [p for c in clouds if c["cloud"] == cloud for p in c["pools"] if p["resource_class"] == resource_class]
    return pools[0]["free"] if pools else None


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> bool:
    """Polls ``condition`` every second until it holds or ``timeout`` seconds have passed; whether
    it held (the caller then asserts on what it reads, so that a failure shows the figures)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(1)
    return True


def delete_servers(credentials: dict[str, Any], prefix: str, timeout: float = 60) -> None:
    """Delete the servers named with ``prefix``, whatever visa did, and wait until they are gone."""
    provider = _provider(credentials, prefix)
    try:
        for server in provider.list_servers():
            if server.name.startswith(prefix):
                provider.delete(server.id)
        deadline = time.monotonic() + timeout
        while any(s.name.startswith(prefix) for s in provider.list_servers()) and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        provider.close()
