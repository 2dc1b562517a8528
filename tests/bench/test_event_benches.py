"""Smoke runs of the event and follower benchmarks at small sizes, on PostgreSQL and real
processes: they run, and their figures say what the benchmarks are for."""

from __future__ import annotations

import pytest

from tests.conftest import _pg_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not _pg_available(), reason="no PostgreSQL"),
]


def test_event_streams_idle_cost_no_query_when_notified(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import event_streams

    assert event_streams.main(["--streams", "20", "--poll", "", "--seconds", "2", "--settle", "1",
                               "--users", "5"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.strip().startswith("notify"))
    assert float(row.split("|")[2]) < 2.0, out  # 20 idle streams: (almost) no query


def test_event_latency_across_processes(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import event_latency

    assert event_latency.main(["--changes", "5", "--gateways", "1"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.strip().startswith("notify"))
    assert int(row.split("|")[1]) == 5 and float(row.split("|")[3]) < 1000, out


def test_follow_calls_none_when_nothing_moves(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import follow_calls

    assert follow_calls.main(["--replicas", "2", "--seconds", "6"]) == 0
    out = capsys.readouterr().out
    row = out.strip().splitlines()[-1]
    assert float(row.split("|")[1]) == 0.0 and 0 < float(row.split("|")[2]) <= 30, out
