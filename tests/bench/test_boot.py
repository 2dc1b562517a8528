"""bench.boot's local path at its smallest size: one create on the local cloud with visa's
worker following it, timed to the first screen read over RFB; the host keeps no account of it."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys

import pytest

from tests.browser import ROOT

pytestmark = pytest.mark.integration


def test_the_boot_bench_times_a_desktop_to_its_first_pixels_and_leaves_no_account() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (the sessions' unix accounts)")
    for prog in ("bwrap", "Xtigervnc", "useradd"):
        if shutil.which(prog) is None:
            pytest.skip(f"missing {prog}")
    before = {p.pw_name for p in pwd.getpwall()}
    r = subprocess.run([sys.executable, "-m", "bench.boot", "--runs", "1", "--modes", "follow"], cwd=ROOT,
                       capture_output=True, text=True, timeout=240)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    follow = report["follow"]
    assert "no-follow" not in report
    for mark in ("cloud_active_s", "vnc_answers_s", "visa_active_s", "first_pixels_s"):
        assert follow[mark] is not None and follow[mark] > 0, report
    assert follow["vnc_answers_s"] <= follow["visa_active_s"] <= follow["first_pixels_s"], report
    left = {p.pw_name for p in pwd.getpwall()} - before
    assert not {name for name in left if name.startswith("vb")}, left
