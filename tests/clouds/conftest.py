"""The OpenStack sandbox for the integration tier: started once per session, stopped at the end.

The first start installs it (a few minutes); later ones take seconds. A sandbox that was
already running when the session began is left running.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from visa.clouds.openstack import OpenStackProvider

SANDBOX = Path(__file__).resolve().parents[2] / "deploy" / "openstack-sandbox" / "sandbox.py"


def sandbox(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SANDBOX), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def openstack_sandbox() -> Iterator[dict[str, Any]]:
    """The sandbox's credentials, as a visa cloud config."""
    for port, what in ((5432, "PostgreSQL"), (5672, "RabbitMQ")):
        if not _listening(port):
            message = f"the OpenStack sandbox needs {what} on 127.0.0.1:{port}"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
    was_running = sandbox("status").returncode == 0
    started = sandbox("start", timeout=1800)
    if started.returncode != 0:
        pytest.fail(f"the OpenStack sandbox did not start:\n{started.stderr[-4000:]}")
    creds = json.loads(sandbox("credentials", "--json").stdout)
    yield creds
    if not was_running:
        sandbox("stop")


@pytest.fixture(scope="session")
def run_prefix() -> str:
    """Every server a session makes is named after it, so cleanup never touches others'."""
    return f"it{uuid.uuid4().hex[:6]}-"


@pytest.fixture
def make_provider(
    openstack_sandbox: dict[str, Any], run_prefix: str, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """Providers on the sandbox whose servers are deleted after the test."""
    made: list[OpenStackProvider] = []
    test_prefix = f"{run_prefix}{request.node.name[:20]}-".replace("[", "-").replace("]", "")

    def make(**overrides: Any) -> OpenStackProvider:
        config = {**openstack_sandbox, "name_prefix": test_prefix, **overrides}
        provider = OpenStackProvider("sandbox", config)
        made.append(provider)
        return provider

    make.prefix = test_prefix  # type: ignore[attr-defined]
    yield make
    for provider in made:
        try:
            for server in provider.list_servers():
                if server.name.startswith(test_prefix):
                    provider.delete(server.id)
        except Exception:  # a failed test may have left the API down; the session cleans up
            pass
        provider.close()
