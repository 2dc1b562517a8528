"""Health, readiness with clouds, Prometheus metrics, request ids in JSON log lines."""

from __future__ import annotations

import io
import json
import logging
import time
from datetime import timedelta

import pytest

from tests.admin.world import build
from tests.clouds.doubles import BrokenCloud, SlowCloud
from visa.clouds.service import clear_cache
from visa.logs import JsonFormatter, RequestIdFilter


@pytest.fixture(autouse=True)
def _fresh_cloud_cache():
    clear_cache()
    yield
    clear_cache()


def test_health_and_readiness(app, db, clock, tmp_path, api_client) -> None:
    from tests.auth.world import login

    build(db, clock)
    c = login(api_client, db, "root").client  # an administrator's browser session
    admin: dict[str, str] = {}
    assert c.get("/health").get_json() == {"status": "ok"}
    r = c.get("/health/ready", headers=admin)
    assert r.status_code == 200 and r.get_json()["clouds"] == {"local": "ok"}, r.get_json()
    services = app.extensions["visa"]
    services.set_provider("local", SlowCloud("local", {"root_dir": str(tmp_path)}))
    clear_cache()
    started = time.monotonic()
    r = c.get("/health/ready", headers=admin)
    assert time.monotonic() - started < 4  # a slow cloud costs the short timeout, not its own time
    body = r.get_json()
    assert r.status_code == 200 and body["status"] == "degraded" and body["clouds"] == {"local": "unavailable"}
    started = time.monotonic()
    assert c.get("/health/ready").get_json()["status"] == "degraded"
    assert time.monotonic() - started < 1.5  # cached: a load balancer polling does not reach the cloud (2 s)
    services.set_provider("local", BrokenCloud("local", {"root_dir": str(tmp_path)}))
    clear_cache()
    assert "keystone says no" in c.get("/health/ready", headers=admin).get_json()["problems"]["local"]
    # Anyone else learns up or down, not why: the cloud's and the database's words stay in the log.
    for other in (app.test_client(), login(api_client, db, "alice").client):
        r = other.get("/health/ready")
        assert r.status_code == 200 and r.get_json() == {"status": "degraded", "database": "ok"}


def test_readiness_hides_the_database_error(clock, tmp_path) -> None:
    from visa.db import Database
    from visa.settings import Settings
    from visa.web.app import create_app

    secret = tmp_path / "no-such-dir" / "secret-name.db"
    broken = Database(f"sqlite:///{secret}")
    other = create_app(Settings(data_dir=tmp_path, secret_key="k"), database=broken, clock=clock, check_schema=False)
    r = other.test_client().get("/health/ready")
    assert r.status_code == 503 and r.get_json() == {"status": "unavailable", "database": "unavailable"}
    assert "secret-name" not in r.get_data(as_text=True)


def test_metrics(app, db, clock) -> None:
    from visa.metrics import observe_active

    world = build(db, clock)
    c = app.test_client()
    c.get("/api/instances", headers={"Authorization": f"Bearer {world.user_token}"})
    c.get("/api/instances/nope", headers={"Authorization": f"Bearer {world.user_token}"})
    with db.unit_of_work() as s:
        from visa.instances.models import Instance

        inst = s.query(Instance).filter_by(uid=world.uids["a1"]).one()
        before = _sample(c, "visa_instance_time_to_active_seconds_count")
        observe_active(inst, inst.created_at + timedelta(seconds=42))
        observe_active(inst, inst.created_at + timedelta(seconds=50))  # only the first ACTIVE counts
    assert _sample(c, "visa_instance_time_to_active_seconds_count") == before + 1
    r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    text = r.get_data(as_text=True)
    assert 'visa_http_requests_total{endpoint="/api/instances",method="GET",status="200"}' in text
    assert 'visa_http_requests_total{endpoint="/api/instances/<uid>",method="GET",status="404"}' in text
    assert 'visa_instances{state="ACTIVE"} 1.0' in text and 'visa_instances{state="STOPPED"} 1.0' in text
    for name in ("visa_http_request_duration_seconds_bucket", "visa_sync_duration_seconds",
                 "visa_reaper_actions_total", "visa_gateway_connections", "visa_gateway_bytes_total"):
        assert name in text, name


def _sample(client, name: str) -> float:
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_request_ids_in_every_log_line(app, db, clock) -> None:
    world = build(db, clock)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        c = app.test_client()
        token = {"Authorization": f"Bearer {world.admin_token}"}
        r = c.get("/api/admin/stats", headers={**token, "X-Request-ID": "abc-123"})
        assert r.headers["X-Request-ID"] == "abc-123"
        r = c.get("/api/instances", headers={**token, "X-Request-ID": "bad id {with} \" quotes " + "x" * 100})
        generated = r.headers["X-Request-ID"]
        assert len(generated) == 32 and generated.isalnum()
        long_path = "/api/" + "x" * 5000
        assert c.get(long_path, headers={"X-Request-ID": "long-1"}).status_code == 404
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [rec for rec in lines if rec["logger"] == "visa.access"]
    assert {rec["request_id"] for rec in access} >= {"abc-123", generated, "long-1"}
    assert all(rec["request_id"] for rec in lines if rec["logger"].startswith("visa"))
    first = next(rec for rec in access if rec["request_id"] == "abc-123")
    assert first["status"] == 200 and first["user"] == "root" and first["duration_ms"] >= 0
    long = next(rec for rec in access if rec["request_id"] == "long-1")
    assert len(long["path"]) < 300 and len(long["message"]) < 400
