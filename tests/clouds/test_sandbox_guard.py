"""A sandbox started from a new state directory drops the databases it finds: while another sandbox
runs on them, it refuses instead, saying which state directory to use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.clouds.conftest import SANDBOX
from visa.clouds.openstack import OpenStackProvider

pytestmark = pytest.mark.integration


def test_a_new_state_directory_does_not_take_over_a_running_sandbox(openstack_sandbox: dict[str, Any],
                                                                     tmp_path: Path) -> None:
    elsewhere = tmp_path / "state"
    env = {**os.environ, "VISA_OS_SANDBOX_STATE": str(elsewhere)}
    for command in ("install", "start"):
        done = subprocess.run([sys.executable, str(SANDBOX), command], capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL, env=env)
        assert done.returncode != 0
        assert "another sandbox answers on 127.0.0.1:5000" in done.stderr and "VISA_OS_SANDBOX_STATE" in done.stderr
    assert not elsewhere.exists()
    provider = OpenStackProvider("sandbox", openstack_sandbox)
    assert isinstance(provider.list_servers(), list)  # the running sandbox still has its databases
    provider.close()
