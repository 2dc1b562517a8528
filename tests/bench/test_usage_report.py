"""A smoke run of the usage report's benchmark at its smallest size on PostgreSQL: every grouping
answers, each accounts for every instance, and the groupings agree on the total."""

from __future__ import annotations

import json

import pytest

from tests.conftest import _pg_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not _pg_available(), reason="no PostgreSQL"),
]


def test_the_usage_bench_reports_every_grouping(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import usage_report

    assert usage_report.main(["--scale", "0.01", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("\n{") + 1:])
    results = report["results"]
    assert report["periods"] == report["instances"] * usage_report.PERIODS
    totals = {results[by]["core_hours"] for by in usage_report.DIMENSIONS}
    assert len(totals) == 1 and totals.pop() > 0, results
    for by in usage_report.DIMENSIONS:
        assert results[by]["instances"] == report["instances"] and results[by]["rows"] >= 1, (by, results[by])
    assert results["cloud"]["rows"] == 1 and results["instrument"]["rows"] == 30
    assert results["api"]["bytes"] > 0
