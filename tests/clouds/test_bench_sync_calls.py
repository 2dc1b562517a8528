"""Smoke run of ``bench.sync_calls`` at its smallest size. It sits beside the OpenStack tests, not
in tests/bench/, because it needs the session's sandbox (this directory's conftest) and must not
start and stop one of its own before them."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from bench import sync_calls
from visa.clouds.openstack import OpenStackProvider

pytestmark = pytest.mark.integration


def test_the_sync_bench_counts_one_list_against_a_get_per_server(
    openstack_sandbox: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert sync_calls.main(["--sizes", "3", "--extrapolate", ""]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.strip().endswith("measured"))
    servers, list_calls, _, get_calls = (float(n.replace(",", "")) for n in re.findall(r"[\d,.]+", row)[:4])
    assert servers >= 3 and list_calls == 1 and get_calls >= 3, out
    # The bench deleted its servers; wait until Nova has, so later tests see none of them.
    provider = OpenStackProvider("sandbox", openstack_sandbox)
    try:
        deadline = time.monotonic() + 120
        while sync_calls.bench_servers(provider):
            assert time.monotonic() < deadline, "the bench's servers were not deleted"
            time.sleep(2)
    finally:
        provider.close()
