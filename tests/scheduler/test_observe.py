"""`visa scheduler` as an operator sees it: /metrics and /health on its own port, JSON log
lines, and alert rules and a dashboard that name only metrics visa exports."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from tests.processes import free_port
from visa.services import Services
from visa.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy/prometheus/visa-alerts.yml"
DASHBOARD = ROOT / "deploy/grafana/visa-dashboard.json"
# Prometheus's own functions and keywords that look like names in an expression.
PROMQL_WORDS = {
    "max", "min", "sum", "avg", "count", "rate", "increase", "irate", "absent", "time", "by", "without", "or",
    "and", "unless", "on", "ignoring", "histogram_quantile", "le", "humanizeDuration", "offset", "bool",
}  # fmt: skip




def _metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_labels)
    without_ranges = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_ranges)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_ranges))
    return {n for n in names - PROMQL_WORDS if not re.fullmatch(r"\d+|e\d+", n)}


def _exported(db) -> set[str]:
    """Every sample name visa's processes export: the process registry (web, gateway and
    scheduler metrics, imported as the processes import them) and the database-read collectors."""
    import visa.metrics
    import visa.scheduler.observe as observe
    from visa.instances.metrics import InstanceStates

    settings = Settings(database_url=db.url, secret_key="x")
    registries = observe.registries(Services(settings=settings, database=db))
    # Labelled metrics export samples once a label is used: touch every one.
    observe.JOB_FAILURES.labels(task="probe")
    observe.SYNC_FAILURES.labels(cloud="probe")
    observe.JOB_LAST_SUCCESS.labels(task="probe")
    observe.JOB_DURATION.labels(task="probe")
    observe.LEADER.labels(holder="probe")
    visa.metrics.REQUESTS.labels("e", "GET", "200")
    visa.metrics.REQUEST_SECONDS.labels("e", "GET")
    visa.metrics.SYNC_DURATION.labels(cloud="probe")
    visa.metrics.REAPER_ACTIONS.labels(action="delete", reason="lifetime")
    visa.metrics.GATEWAY_CONNECTIONS.labels(kind="desktop")
    visa.metrics.GATEWAY_BYTES.labels(kind="desktop", direction="to_client")
    names: set[str] = set()
    for registry in registries:
        for family in registry.collect():
            names.update(sample.name for sample in family.samples)
    names.update(sample.name for family in InstanceStates(db).collect() for sample in family.samples)
    return names


def test_alert_rules_parse_and_name_exported_metrics(db) -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    alerts = {r["alert"]: r for group in rules["groups"] for r in group["rules"]}
    # What the operator must be told: reaper stopped, no leader, sync failing, outbox backlog.
    assert {"VisaReaperNotRun", "VisaSchedulerNoLeader", "VisaSyncFailing", "VisaOutboxBacklog"} <= set(alerts)
    exported = _exported(db)
    assert "visa_scheduler_lease_held" in exported and "visa_outbox_backlog" in exported
    for name, rule in alerts.items():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), name
        used = _metric_names(rule["expr"])
        assert used, name
        # `up`: Prometheus's own series of each scrape target.
        assert used <= exported | {"up"}, f"{name} names metrics visa does not export: {used - exported}"
    assert 'task="lifecycle"' in alerts["VisaReaperNotRun"]["expr"]  # the reaper is the lifecycle job

    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    for expr in exprs:
        missing = _metric_names(expr) - exported
        assert not missing, f"dashboard names metrics visa does not export: {missing}"


def test_metric_name_extraction_sees_through_promql() -> None:
    assert _metric_names('time() - max(visa_a{job="x"}) > 30 * 60') == {"visa_a"}
    assert _metric_names("increase(visa_b_total[15m]) > 5 or absent(visa_c)") == {"visa_b_total", "visa_c"}
    assert _metric_names("sum by (le, cloud) (rate(visa_d_bucket[5m]))") == {"visa_d_bucket"}


def _wait_health(port: int, proc: subprocess.Popen, status: int = 200, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "visa scheduler exited"
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2, trust_env=False)
            if r.status_code == status:
                return r.json()
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "scheduler /health did not answer"
        time.sleep(0.2)


def test_visa_scheduler_serves_metrics_health_and_json_logs(committed_db, tmp_path: Path) -> None:
    db = committed_db  # the scheduler process reads it
    port = free_port()
    env = {
        **os.environ, "VISA_DATABASE_URL": db.url, "VISA_DATA_DIR": str(tmp_path), "VISA_SECRET_KEY": "s" * 32,
        "VISA_LOG_JSON": "true", "VISA_SCHEDULER__METRICS_PORT": str(port), "VISA_SCHEDULER__LEASE_SECONDS": "6",
    }  # fmt: skip
    env.pop("VISA_CONFIG", None)
    log = tmp_path / "scheduler.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "visa.cli", "scheduler", "--no-worker"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        assert _wait_health(port, proc) == {"status": "ok", "role": "scheduler"}
        deadline = time.monotonic() + 60
        while True:  # it leads alone and runs the jobs at once
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5, trust_env=False).text
            if 'visa_scheduler_job_last_success_timestamp_seconds{task="lifecycle"}' in text:
                break
            assert time.monotonic() < deadline, text[-3000:]
            time.sleep(0.3)
        assert re.search(r'^visa_scheduler_leader\{holder="[^"]+"\} 1\.0$', text, re.M), text
        assert re.search(r"^visa_scheduler_lease_held 1\.0$", text, re.M)
        assert re.search(r"^visa_outbox_backlog 0\.0$", text, re.M)
        assert re.search(r'^visa_scheduler_job_duration_seconds\{task="sync"\} \d', text, re.M)
        assert httpx.get(f"http://127.0.0.1:{port}/nope", timeout=5, trust_env=False).status_code == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]  # every line is JSON, like the web's
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any("leads" in r["message"] for r in records)
    assert any("lease released" in r["message"] for r in records)  # a clean stop hands over at once
