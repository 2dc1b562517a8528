"""The OpenStack sandbox for the integration tier: started once per session, stopped at the end.

The first start installs it (a few minutes); later ones take seconds. A sandbox that was
already running when the session began is left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
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
        if not was_running:  # a half-started sandbox would outlive the tests, its services running
            sandbox("stop")
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


@dataclass
class Credentials:
    """Application credentials of visa's sandbox account, made through Keystone's API."""

    conn: Any
    prefix: str
    made: list[str]

    def new(self, name: str) -> Any:
        # The role visa's account holds on its project, named: without it Keystone gives the
        # credential the token's roles, expanded through its implied roles, and once (one CI
        # run in many) refused its own expansion ("no role assignment with role admin").
        cred = self.conn.identity.create_application_credential(
            self.conn.current_user_id, name=f"{self.prefix}{name}-{uuid.uuid4().hex[:6]}",
            description="made by visa's tests", roles=[{"name": "member"}])
        self.made.append(cred.id)
        return cred

    def delete(self, cred: Any) -> None:
        self.conn.identity.delete_application_credential(self.conn.current_user_id, cred.id)
        self.made.remove(cred.id)

    def config(self, cred: Any, secret: str | None = None, **extra: Any) -> dict[str, Any]:
        """A cloud config that authenticates with ``cred`` (or ``secret`` in place of its own)."""
        return {"auth_type": "v3applicationcredential", "auth_url": self.auth_url,
                "application_credential_id": cred.id,
                "application_credential_secret": cred.secret if secret is None else secret,
                "region_name": "RegionOne", "interface": "public", **extra}

    @property
    def auth_url(self) -> str:
        return str(self.conn.config.config["auth"]["auth_url"])


@pytest.fixture
def application_credentials(openstack_sandbox: dict[str, Any], run_prefix: str) -> Iterator[Credentials]:
    """Makes application credentials on the sandbox's Keystone; those left are deleted after the test."""
    import openstack

    keys = ("auth_url", "username", "password", "project_name", "user_domain_name", "project_domain_name")
    conn = openstack.connect(**{k: openstack_sandbox[k] for k in keys}, region_name="RegionOne",
                             load_yaml_config=False, load_envvars=False)
    creds = Credentials(conn, run_prefix, [])
    yield creds
    for cred_id in list(creds.made):
        with contextlib.suppress(Exception):  # already gone
            conn.identity.delete_application_credential(conn.current_user_id, cred_id)
    conn.close()


def sandbox_catalogue(session: Any, cloud_id: int) -> tuple[Any, Any]:
    """The desktop image and the tiny size the sandbox has (its image and its Nova flavour), on
    the cloud ``cloud_id``; flushed."""
    from visa.catalogue.models import Flavour, Image, ImageProtocol, Protocol

    image = Image(name="desktop", environment="Desktop", version="1", cloud_image_ref="visa-sandbox-image",
                  visible=True, options={}, cloud_id=cloud_id)
    image.protocols.append(ImageProtocol(protocol=Protocol.VNC, port=5901))
    flavour = Flavour(name="visa.tiny", cores=1, memory_mb=256, cloud_flavour_ref="visa.tiny", visible=True,
                      gpu_count=0, cloud_id=cloud_id)
    session.add_all([image, flavour])
    session.flush()
    return image, flavour
