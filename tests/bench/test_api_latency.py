"""A smoke run of the pages-and-API benchmark at its smallest size, on PostgreSQL and real
servers (gunicorn and uvicorn): its own HTTP load generator gets every answer whole from both,
and the figures it reports are those of answered requests."""

from __future__ import annotations

import gc
import json

import pytest

from tests.conftest import _pg_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not _pg_available(), reason="no PostgreSQL"),
]


def test_the_api_bench_loads_both_servers_without_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import api_latency

    assert api_latency.main(["--seconds", "1", "--concurrency", "1,3", "--scale", "0.01",
                             "--modes", "wsgi,asgi", "--workers", "1", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("\n{") + 1:])
    for mode in ("wsgi", "asgi"):
        cases = report["results"][mode]
        assert len(cases) == 5, out  # three API answers, two pages
        for label, by_level in cases.items():
            for level, figures in by_level.items():
                assert figures["requests"] > 0 and figures["errors"] == 0, (mode, label, level, figures)
                assert figures["p50_ms"] <= figures["p99_ms"], figures
                # The API: one statement for the caller, at most four for the list (no N+1); a
                # page a few more (notices, quota). The header came through the hand-written reading.
                most = 12 if label.startswith("page:") else 5
                assert all(1 <= q <= most for q in figures["queries_per_request"]), (label, figures)


def test_a_served_process_settles_its_heap_out_of_the_collectors_sight() -> None:
    from visa.serving import settle_heap

    before = gc.get_freeze_count()
    settle_heap()
    try:
        assert gc.get_freeze_count() > max(before, 10_000)  # the loaded modules and app: long-lived
    finally:
        gc.unfreeze()
