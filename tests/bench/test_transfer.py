"""bench.transfer runs end to end on a small size: visa's files API and scp over one real sshd,
both byte-checked, and a table of throughput and the web process's memory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser import ROOT

pytestmark = pytest.mark.integration


def test_the_transfer_bench_prints_its_table_on_a_small_size() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (a unix account and sshd of its own)")
    for prog in ("/usr/sbin/sshd", "/usr/lib/openssh/sftp-server", "scp", "useradd"):
        if not (Path(prog).exists() or shutil.which(prog)):
            pytest.skip(f"missing {prog}")
    r = subprocess.run([sys.executable, "-m", "bench.transfer", "--size-mb", "8"], cwd=ROOT,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert any("byte-identical" in line for line in lines), r.stdout
    rows = {line.split()[0]: line.split() for line in lines if line.split()[:1] in (["upload"], ["download"])}
    assert set(rows) == {"upload", "download"}, r.stdout
    for cells in rows.values():
        assert float(cells[1]) > 0 and float(cells[2]) > 0  # visa and scp MB/s
