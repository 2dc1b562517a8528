"""The fast OpenStack sandbox comes back after a stop, with the same compute node.

nova-compute refuses to start when its node identity (``state/data/nova/compute_id``) is gone
while its service record remains. The sandbox's driver keeps that identity, and ``start``
restores a missing file from Nova's database; here both a plain restart and one with the file
removed must bring nova-compute back as the same resource provider, able to build servers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.clouds.conftest import SANDBOX, sandbox

pytestmark = pytest.mark.integration

IDENTITY = SANDBOX.parent / "state" / "data" / "nova" / "compute_id"


def _providers(creds: dict[str, Any]) -> list[str]:
    from visa.clouds.openstack import OpenStackProvider

    provider = OpenStackProvider("sandbox", creds)
    try:
        return [h.name for h in provider.capacity().hosts]
    finally:
        provider.close()


def _restart(remove_identity: bool) -> str:
    stopped = sandbox("stop", timeout=120)
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    if remove_identity:
        IDENTITY.unlink()
    started = sandbox("start", timeout=600)
    assert started.returncode == 0, f"second start failed:\n{started.stderr[-3000:]}"
    return started.stderr


def test_start_stop_start_keeps_the_compute_node(openstack_sandbox: dict[str, Any], make_provider) -> None:
    before = IDENTITY.read_text().strip()
    hosts = _providers(openstack_sandbox)
    assert hosts == ["visa-sandbox-compute"]

    _restart(remove_identity=False)
    assert IDENTITY.read_text().strip() == before
    assert sandbox("status").returncode == 0

    log = _restart(remove_identity=True)
    assert f"node identity {before} restored" in log
    assert IDENTITY.read_text().strip() == before
    assert _providers(openstack_sandbox) == hosts  # one provider, not a second one

    # And it builds servers again.
    from visa.clouds.base import ServerSpec
    from visa.states import InstanceState

    provider = make_provider()
    server = provider.create(ServerSpec(name="after-restart", instance_uid="restart1", image_ref="visa-sandbox-image",
                                        flavour_ref="visa.tiny", user_data="", secret="s"))
    deadline = time.monotonic() + 120
    while (current := provider.get(server.id)) is not None and current.state == InstanceState.BUILDING:
        assert time.monotonic() < deadline, "the server did not leave BUILDING"
        time.sleep(1)
    assert current is not None and current.state == InstanceState.ACTIVE, current
    assert Path(IDENTITY).exists()
