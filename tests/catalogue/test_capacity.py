"""Capacity before creation, on the real local cloud (this host): which flavours fit now, the
early refusal of one that does not (before the cloud is asked), and bad queries."""

from __future__ import annotations

from sqlalchemy import func, select

from tests.factories import make_cloud, make_flavour, make_image, make_plan, make_user
from visa.catalogue.models import Flavour
from visa.instances.models import Instance, InstanceCommand
from visa.users.models import Role

# More memory than any machine here has: the host says no.
HUGE_MB = 64 * 1024 * 1024


def _world(db, clock, tmp_path) -> dict[str, int]:
    with db.unit_of_work() as s:
        cloud = make_cloud(s, clock, "local", kind="local")
        cloud.config = {"root_dir": str(tmp_path / "sessions")}
        image = make_image(s, "desktop")
        small = make_plan(s, image, make_flavour(s, "small", cores=1, memory_mb=256), preset=True)
        huge = make_plan(s, image, make_flavour(s, "huge", cores=2, memory_mb=HUGE_MB))
        hidden = make_flavour(s, "retired", cores=1, memory_mb=256)
        hidden.visible = False
        make_user(s, clock, "sam", roles=(Role.STAFF,), password="sam-password")
        return {"small": small.id, "huge": huge.id}


def test_capacity_per_flavour(app, api_client, db, clock, tmp_path) -> None:
    _world(db, clock, tmp_path)
    c = api_client()
    assert c.get("/api/capacity").status_code == 401
    assert c.login("sam", "sam-password").status_code == 200
    rows = {r["flavour"]: r for r in c.get("/api/capacity").get_json()}
    assert set(rows) == {"small", "huge"}  # hidden flavours are not offered
    assert rows["small"]["available"] is True and rows["small"]["cloud"] == "local"
    assert rows["small"]["needs"] == {"VCPU": 1, "MEMORY_MB": 256}
    assert rows["huge"]["available"] is False
    assert "MEMORY_MB" in rows["huge"]["message"] and "free" in rows["huge"]["message"]
    one = c.get("/api/capacity?flavour=small").get_json()
    assert [r["flavour"] for r in one] == ["small"]


def test_unknown_flavour_is_a_4xx(app, api_client, db, clock, tmp_path) -> None:
    _world(db, clock, tmp_path)
    c = api_client()
    c.login("sam", "sam-password")
    for query in ("flavour=nope", "flavour=small&flavour=nope", "flavour=retired", f"flavour={'x' * 500}"):
        r = c.get(f"/api/capacity?{query}")
        assert r.status_code == 404, (query, r.get_json())
        body = r.get_json()
        assert body["field"] == "flavour" and body["message"].startswith("no flavour")
        assert "small" not in body["message"]


def test_no_room_is_refused_before_the_cloud_is_asked(app, api_client, db, clock, tmp_path) -> None:
    plans = _world(db, clock, tmp_path)
    c = api_client()
    c.login("sam", "sam-password")
    r = c.post("/api/instances", json={"name": "big one", "plan_id": plans["huge"]})
    assert r.status_code == 409, r.get_json()
    body = r.get_json()
    assert body["error"] == "no_capacity" and body["field"] == "plan_id"
    assert "huge cannot be had now on cloud 'local'" in body["message"] and "MEMORY_MB" in body["message"]
    with db.sessionmaker() as s:
        # Nothing stored, nothing queued for the cloud.
        assert s.scalar(select(func.count(Instance.id))) == 0
        assert s.scalar(select(func.count(InstanceCommand.id))) == 0
        assert s.scalar(select(Flavour.name).where(Flavour.memory_mb == HUGE_MB)) == "huge"
    ok = c.post("/api/instances", json={"name": "small one", "plan_id": plans["small"]})
    assert ok.status_code == 201, ok.get_json()
