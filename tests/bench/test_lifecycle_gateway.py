"""Smoke runs of the lifecycle and gateway benchmarks at small sizes: they run to their tables,
the lifecycle's two ways take the same decisions, and every relay carries the stream."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.browser import ROOT

pytestmark = pytest.mark.integration


def _bench(*argv: str) -> str:
    r = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_the_lifecycle_bench_takes_the_same_decisions_both_ways() -> None:
    out = _bench("bench.lifecycle", "--instances", "3000", "--repeats", "1", "--backends", "sqlite")
    row = next(line for line in out.splitlines() if line.startswith("sqlite "))
    assert " True " in row, out  # set-based and per-row decisions are the same
    assert sum(int(n) for n in re.findall(r"(\d+) (?:inactivity warnings|deletions)", row)) > 0, out


def test_the_gateway_bench_relays_through_each_peer() -> None:
    out = _bench("bench.gateway", "--mb", "4", "--round-trips", "50", "--connections", "5", "--repeat", "1")
    rows = {line.split("|")[1].strip(): line.split("|") for line in out.splitlines() if line.startswith("| ")}
    for relay in ("raw TCP (the limit)", "websockify 0.13 (fork per connection)", "visa gateway (uvicorn, asyncio)"):
        assert relay in rows, out
        assert float(rows[relay][2].split()[0].replace(",", "")) > 0, out  # MB/s
