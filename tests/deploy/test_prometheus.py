"""The shipped monitoring, run by Prometheus itself (Debian's ``prometheus``: the server and
``promtool``):

* ``promtool check rules`` and ``promtool test rules`` on deploy/prometheus/ as shipped: the
  unit tests beside the rules make every alert fire once;
* a real Prometheus scrapes a real ``visa web``, ``visa gateway`` and ``visa scheduler`` on
  PostgreSQL, with the shipped rules at test-sized durations (minutes become seconds): every
  series the rules and the Grafana dashboard select is one the scrape returns, with the
  labels they name; a reaper that stops running fires ``VisaReaperNotRun`` (and the sync,
  ``VisaSyncNotRun``); a killed scheduler fires ``VisaSchedulerDown`` and
  ``VisaSchedulerNoLeader``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.gateway.conftest import Processes, free_port, wait_port
from tests.gateway.test_separate_process import BIN, web_argv

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/visa-alerts.yml"
RULES_TEST = ROOT / "deploy/prometheus/visa-alerts.test.yml"
DASHBOARD = ROOT / "deploy/grafana/visa-dashboard.json"
# A selector in an expression: a visa metric (or `up`) and its label matchers.
SELECTOR = re.compile(r"\b(visa_[a-z0-9_]+|up)\b(?:\{([^}]*)\})?")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is required in CI (deploy/system-packages.txt: prometheus)")
        pytest.skip(f"no {tool} (apt-get install prometheus)")
    return path


def _alerts(text: str) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in yaml.safe_load(text)["groups"] for r in g["rules"]}


def test_promtool_checks_the_shipped_rules_and_their_tests_fire_every_alert() -> None:
    promtool = _need("promtool")
    r = subprocess.run([promtool, "check", "rules", RULES.name], cwd=RULES.parent, capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    alerts = _alerts(RULES.read_text())
    assert f"SUCCESS: {len(alerts)} rules found" in r.stdout
    r = subprocess.run([promtool, "test", "rules", RULES_TEST.name], cwd=RULES.parent, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    fired = {
        case["alertname"]
        for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == set(alerts), f"alerts no unit test makes fire: {set(alerts) - fired}"


def sized_for_tests(rules: str) -> str:
    """The shipped rules with minutes read as seconds: `for:`, range windows and `N * 60`."""
    sized = re.sub(r"\bfor: (\d+)m\b", r"for: \1s", rules)
    sized = re.sub(r"\[(\d+)m\]", r"[\1s]", sized)
    sized = re.sub(r"(\d+) \* 60\b", r"\1", sized)
    return sized


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: Any) -> Any:
        r = httpx.get(f"{self.url}{path}", params=params, timeout=10, trust_env=False)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "success", body
        return body["data"]

    def firing(self) -> dict[str, list[dict[str, str]]]:
        out: dict[str, list[dict[str, str]]] = {}
        for alert in self.get("/api/v1/alerts")["alerts"]:
            if alert["state"] == "firing":
                out.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        return out

    def wait(self, what: str, check: Any, timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            assert time.monotonic() < deadline, (
                f"Prometheus: {what} (firing: {self.firing() if what != 'ready' else '?'})"
            )
            time.sleep(0.5)


def _check_selectors(prom: Prometheus, expr: str, where: str, extra_labels: set[str] = frozenset()) -> None:
    """Every selector of ``expr`` matches series of the scrape whose labels include those it
    names (`=` values included: they must exist), and ``extra_labels`` (by(), legends)."""
    used = SELECTOR.findall(expr)
    assert used, f"{where}: no visa metric in {expr!r}"
    names: set[str] = set()
    for name, matchers in used:
        series = prom.get("/api/v1/series", **{"match[]": name})
        assert series, f"{where}: the scrape has no series {name} ({expr!r})"
        names.add(name)
        for label, op, value in MATCHER.findall(matchers or ""):
            assert any(label in s for s in series), f"{where}: {name} has no label {label!r}"
            if op == "=":
                assert any(s.get(label) == value for s in series), f"{where}: no {name}{{{label}={value!r}}}"
    labels = {label for name in names for s in prom.get("/api/v1/series", **{"match[]": name}) for label in s}
    missing = extra_labels - labels
    assert not missing, f"{where}: labels {missing} are on no series of {sorted(names)}"


def _config(tmp: Path, targets: dict[str, int]) -> Path:
    (tmp / "rules.yml").write_text(sized_for_tests(RULES.read_text()))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": [str(tmp / "rules.yml")],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in targets.items()
        ],
    }
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_test_sized_rules_keep_their_shape() -> None:
    sized = _alerts(sized_for_tests(RULES.read_text()))
    assert set(sized) == set(_alerts(RULES.read_text()))
    assert "> 30\n" in sized["VisaReaperNotRun"]["expr"] + "\n" and sized["VisaReaperNotRun"]["for"] == "5s"
    assert "[30s]" in sized["VisaJobFailing"]["expr"]


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_prometheus_scrapes_visa_and_the_scheduler_alerts_fire(committed_db, tmp_path: Path) -> None:
    prometheus = _need("prometheus")
    web, gateway, scheduler, prom_port = free_port(), free_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VISA_") and k != "PROMETHEUS_MULTIPROC_DIR"},
        "VISA_DATABASE_URL": committed_db.url, "VISA_SECRET_KEY": "prometheus-test-secret-0123456789",
        "VISA_DATA_DIR": str(tmp_path / "data"), "VISA_BASE_URL": f"http://127.0.0.1:{web}",
        "VISA_GATEWAY__EMBEDDED": "false", "VISA_SCHEDULER__ENABLED_IN_WEB": "false",
        # Each job runs once when the scheduler leads, then not for an hour: a reaper and a sync
        # that stopped, with the rules' 30 and 10 minutes read as seconds.
        "VISA_SCHEDULER__LIFECYCLE_SECONDS": "3600", "VISA_SCHEDULER__SYNC_SECONDS": "3600",
        "VISA_SCHEDULER__LEASE_SECONDS": "5", "VISA_SCHEDULER__METRICS_PORT": str(scheduler),
    }  # fmt: skip
    r = subprocess.run([str(BIN / "visa"), "init"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr  # the local cloud: the sync's series name it
    procs = Processes(tmp_path)
    try:
        web_proc = procs.start(web_argv(web), env=env)
        gateway_proc = procs.start([str(BIN / "visa"), "gateway", "--host", "127.0.0.1", "--port", str(gateway)],
                                   env=env)  # fmt: skip
        scheduler_proc = procs.start([str(BIN / "visa"), "scheduler", "--no-worker"], env=env)
        for port, proc in ((web, web_proc), (gateway, gateway_proc), (scheduler, scheduler_proc)):
            wait_port(port, proc, timeout=90)
        httpx.get(f"http://127.0.0.1:{web}/health", timeout=10, trust_env=False)  # a request counted
        config = _config(tmp_path, {"visa-web": web, "visa-gateway": gateway, "visa-scheduler": scheduler})
        prom_proc = procs.start([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{prom_port}"])  # fmt: skip
        wait_port(prom_port, prom_proc, timeout=60)
        prom = Prometheus(f"http://127.0.0.1:{prom_port}")

        def ready() -> bool:
            return httpx.get(f"{prom.url}/-/ready", timeout=5, trust_env=False).status_code == 200

        prom.wait("ready", ready, timeout=60)

        def all_up() -> bool:
            targets = prom.get("/api/v1/targets")["activeTargets"]
            return len(targets) == 3 and all(t["health"] == "up" for t in targets)

        prom.wait("the three visa processes scraped", all_up, timeout=60)
        # The scheduler's jobs ran once (the lifecycle's success is a series Prometheus keeps).
        prom.wait(
            "the lifecycle job's success scraped",
            lambda: prom.get(
                "/api/v1/query", query='visa_scheduler_job_last_success_timestamp_seconds{task="lifecycle"}'
            )["result"],
        )
        prom.wait(
            "the sync's duration scraped",
            lambda: prom.get("/api/v1/query", query='visa_sync_duration_seconds_count{cloud="local"}')[
                "result"
            ],
        )

        # What the rules and the dashboard select is what this scrape returns.
        for name, rule in _alerts(RULES.read_text()).items():
            _check_selectors(prom, rule["expr"], name)
        for panel in json.loads(DASHBOARD.read_text())["panels"]:
            for target in panel["targets"]:
                labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
                for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", target["expr"]):
                    labels |= {x.strip() for x in group.split(",") if x.strip()}
                _check_selectors(prom, target["expr"], f"dashboard panel {panel['title']!r}", labels)

        # The reaper and the sync have not run since the start: their alerts fire.
        firing = prom.wait(
            "VisaReaperNotRun and VisaSyncNotRun fire",
            lambda: {"VisaReaperNotRun", "VisaSyncNotRun"} <= set(prom.firing()) and prom.firing(),
        )
        assert "VisaSchedulerDown" not in firing and "VisaSchedulerNoLeader" not in firing, firing

        # The scheduler is killed: its target is down and no process holds the lease.
        os.killpg(scheduler_proc.pid, signal.SIGKILL)
        scheduler_proc.wait(10)
        firing = prom.wait(
            "VisaSchedulerDown and VisaSchedulerNoLeader fire",
            lambda: {"VisaSchedulerDown", "VisaSchedulerNoLeader"} <= set(prom.firing()) and prom.firing(),
        )
        (down,) = firing["VisaSchedulerDown"]
        assert down["job"] == "visa-scheduler" and down["instance"] == f"127.0.0.1:{scheduler}", down
        assert down["severity"] == "warning"
    finally:
        procs.stop()
