"""Smoke runs of the desktop benchmarks at their smallest sizes: many streaming desktops through
each relay (bench.desktop_load), and a real desktop watched by noVNC in Chromium through the link
shaper (bench.desktop). They run to their tables, and every peer's row has figures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser import ROOT

pytestmark = pytest.mark.integration


def _rows(out: str, first: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in out.splitlines()
        if line.startswith("| ") and not line.startswith(first)
    ]


def test_the_desktop_load_bench_times_pings_through_every_relay() -> None:
    if shutil.which("websockify") is None and not (Path(sys.executable).parent / "websockify").exists():
        pytest.skip("websockify is not installed")
    r = subprocess.run(
        [sys.executable, "-m", "bench.desktop_load", "--desktops", "2", "--seconds", "1", "--kbps", "50"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {cells[0]: cells for cells in _rows(r.stdout, "| relay ")}
    assert set(rows) == {"raw TCP (no relay)", "websockify (a process per desktop)", "visa as it was", "visa tuned"}
    for cells in rows.values():
        assert int(cells[1]) >= 10, r.stdout  # 2 desktops, a ping each 100 ms for 1 s
        p50, p99 = (float(v) for v in cells[2].split("/"))
        assert 0 < p50 <= p99, r.stdout


def test_the_desktop_bench_measures_every_peer_on_one_link() -> None:
    for prog in ("Xtigervnc", "openbox", "xterm", "xdotool", "/usr/bin/chromium"):
        if shutil.which(prog) is None:
            pytest.skip(f"missing {prog}")
    r = subprocess.run(
        [sys.executable, "-m", "bench.desktop", "--quick", "--profiles", "lan", "--samples", "2",
         "--animation-seconds", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    rows = _rows(r.stdout, "| link ")
    assert [cells[1] for cells in rows] == [
        "field default (websockify, noVNC q2/c6)", "visa as it is (b3c20b6)", "visa, video proxy (this tree)"
    ], r.stdout
    for cells in rows:
        assert cells[0] == "LAN" and cells[2] != "-", r.stdout  # typing latency measured
        p50, p99 = (float(v) for v in cells[2].split("/"))
        assert 0 < p50 <= p99, r.stdout
        for fps in (cells[5], cells[8]):  # frames painted, and the source's own rate beside them
            source = fps.split("(")[1].split(")")[0]
            assert float(fps.split()[0]) >= 0 and (source == "?" or float(source) > 0), r.stdout


def test_the_reconnect_bench_brings_the_desktop_back_after_a_gateway_kill() -> None:
    for prog in ("Xtigervnc", "nginx", "openssl", "/usr/bin/chromium"):
        if shutil.which(prog) is None and not Path(prog).exists():
            pytest.skip(f"missing {prog}")
    r = subprocess.run([sys.executable, "-m", "bench.reconnect", "--kills", "1"], cwd=ROOT,
                       capture_output=True, text=True, timeout=240)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout[r.stdout.index("\n{") + 1 :] if not r.stdout.startswith("{") else r.stdout)
    (kill,) = report["kills"]
    assert 0 < kill["shown_s"] <= kill["connected_s"] and kill["gateway_s"] <= kill["connected_s"], report
