"""Nova's states, faults and errors as visa's, without a cloud (fast tier)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
import requests
from keystoneauth1 import exceptions as ksa_exc
from openstack import exceptions as os_exc

from visa.clouds.base import VISA_TAG, ServerSpec
from visa.clouds.openstack import OpenStackProvider, fault_message, server_state, to_server, translate
from visa.errors import CloudError
from visa.instances.models import InstanceState as S


@pytest.mark.parametrize(
    ("status", "task_state", "vm_state", "expected"),
    [
        ("BUILD", "spawning", "building", S.BUILDING),
        ("REBUILD", None, "active", S.BUILDING),
        ("ACTIVE", None, "active", S.ACTIVE),
        ("ACTIVE", "powering-off", "active", S.STOPPING),
        ("ACTIVE", "deleting", "active", S.DELETING),
        ("SHUTOFF", "powering-on", "stopped", S.STARTING),
        ("REBOOT", "rebooting", "active", S.REBOOTING),
        ("HARD_REBOOT", "rebooting_hard", "active", S.REBOOTING),
        ("MIGRATING", "migrating", "active", S.ACTIVE_MIGRATING),
        ("MIGRATING", "migrating", "stopped", S.MIGRATING),
        ("RESCUE", None, "rescued", S.UNAVAILABLE),
        ("RESIZE", "resize_prep", "active", S.UNAVAILABLE),
        ("REVERT_RESIZE", None, "resized", S.UNAVAILABLE),
        ("VERIFY_RESIZE", None, "resized", S.UNAVAILABLE),
        ("DELETED", None, "deleted", S.DELETED),
        ("SOFT_DELETED", None, "soft-delete", S.DELETED),
        ("SHELVED", None, "shelved", S.DELETED),
        ("SHELVED_OFFLOADED", None, "shelved_offloaded", S.DELETED),
        ("PAUSED", None, "paused", S.STOPPED),
        ("SHUTOFF", None, "stopped", S.STOPPED),
        ("SUSPENDED", None, "suspended", S.STOPPED),
        ("ERROR", None, "error", S.ERROR),
        ("ERROR", "deleting", "error", S.DELETING),
        ("UNKNOWN", None, None, S.UNKNOWN),
        ("SOMETHING_NEW", None, None, S.UNKNOWN),
        (None, None, None, S.UNKNOWN),
    ],
)
def test_status_mapping(
    status: str | None, task_state: str | None, vm_state: str | None, expected: S
) -> None:
    assert server_state(status, task_state, vm_state) is expected


def test_to_server_reads_uid_address_fault_and_time() -> None:
    raw = SimpleNamespace(
        id="abc",
        name="visa-1",
        status="ERROR",
        task_state=None,
        vm_state="error",
        power_state=0,
        metadata={VISA_TAG: "uid-1", "owner": "alice"},
        addresses={
            "other": [{"version": 4, "addr": "127.9.0.1", "OS-EXT-IPS:type": "fixed"}],
            "visa-net": [
                {"version": 6, "addr": "fd00::1", "OS-EXT-IPS:type": "fixed"},
                {"version": 4, "addr": "127.100.0.5", "OS-EXT-IPS:type": "fixed"},
            ],
        },
        fault={"code": 500, "message": "No valid host was found. "},
        created_at="2026-11-24T10:00:00Z",
    )
    server = to_server(raw, "visa-net")
    assert server.state is S.ERROR
    assert server.instance_uid == "uid-1"
    assert server.address == "127.100.0.5"
    assert server.fault is not None and server.fault.startswith("No hypervisor can take this machine")
    assert server.created_at == datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    assert server.provider_state == {
        "status": "ERROR",
        "task_state": None,
        "vm_state": "error",
        "power_state": 0,
    }


def test_fault_message() -> None:
    assert fault_message(None) is None
    assert fault_message({"code": 500, "message": "disk full"}) == "disk full"
    assert fault_message({"code": 500, "message": ""}) == "the cloud reported fault 500"


def http_error(status: int, message: str) -> Exception:
    """The exception openstacksdk raises for such an answer of Nova."""
    response = requests.Response()
    response.status_code = status
    response.headers["Content-Type"] = "application/json"
    response._content = json.dumps({"error": {"code": status, "message": message}}).encode()
    try:
        os_exc.raise_from_response(response)
    except os_exc.HttpException as exc:
        return exc
    raise AssertionError("no exception raised")


@pytest.mark.parametrize(
    ("exc", "reason", "transient"),
    [
        (ksa_exc.ConnectFailure("refused"), "unavailable", True),
        (ksa_exc.ConnectTimeout("slow"), "timeout", True),
        (os_exc.HttpException("boom", http_status=503), "unavailable", True),
        (os_exc.HttpException("boom", http_status=500), "unavailable", True),
        (os_exc.HttpException("slow down", http_status=429), "unavailable", True),
        (
            os_exc.ForbiddenException(
                "Quota exceeded for instances: Requested 1, but already used 0 of 0 instances",
                http_status=403,
            ),
            "quota_exceeded",
            False,
        ),
        (os_exc.ConflictException("Cannot 'start' instance", http_status=409), "conflict", False),
        (os_exc.NotFoundException("gone", http_status=404), "not_found", False),
        (ksa_exc.Unauthorized("no"), "auth", False),
        (os_exc.BadRequestException("Invalid key_name provided.", http_status=400), "error", False),
    ],
)
def test_translate(exc: Exception, reason: str, transient: bool) -> None:
    error = translate(exc, "create server", "site")
    assert isinstance(error, CloudError)
    assert error.details["reason"] == reason
    assert error.transient is transient
    assert "'site'" in error.message


def test_overlong_metadata_is_refused_before_any_call() -> None:
    provider = OpenStackProvider("x", {"auth_url": "http://127.0.0.1:9/v3"})
    spec = ServerSpec(
        name="n",
        instance_uid="u",
        image_ref="i",
        flavour_ref="f",
        user_data="",
        secret="s",
        metadata={"k": "v" * 300},
    )
    with pytest.raises(CloudError) as info:
        provider._metadata(spec)
    assert info.value.details["reason"] == "invalid_metadata"


def test_an_unknown_application_credential_is_refused_credentials() -> None:
    error = translate(ksa_exc.NotFound("Could not find Application Credential: abc.", url="http://k/v3/auth/tokens",
                                       method="POST"), "list servers", "site")
    assert error.details["reason"] == "auth" and not error.transient
    assert "Could not find Application Credential" in error.message
