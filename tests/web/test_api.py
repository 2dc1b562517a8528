"""The REST basics on both databases: login, plans, create, quota, bad input as JSON 4xx."""

from __future__ import annotations

from tests.factories import make_cloud, make_experiment, make_flavour, make_image, make_plan, make_user
from visa.users.models import Role


def _seed(db, clock):
    with db.unit_of_work() as s:
        make_cloud(s, clock)
        alice = make_user(s, clock, "alice", password="alice-password", quota=1)
        make_user(s, clock, "bob", password="bob-password")
        make_user(s, clock, "sam", password="sam-password", roles=(Role.STAFF,))
        exp = make_experiment(s, members=[alice], proposal="ev280")
        plan = make_plan(s, make_image(s), make_flavour(s, "esrf.medium"), preset=True)
        return exp.id, plan.id


def test_login_create_list_and_quota(db, clock, api_client) -> None:
    exp_id, plan_id = _seed(db, clock)
    c = api_client()
    assert c.get("/api/instances").status_code == 401
    assert c.login("alice", "wrong").status_code == 401
    assert c.login("alice", "alice-password").status_code == 200
    assert [p["id"] for p in c.get(f"/api/plans?experiment={exp_id}").get_json()] == [plan_id]
    r = c.post("/api/instances", json={"name": "my analysis", "plan_id": plan_id, "experiment_ids": [exp_id]})
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert body["state"] == "BUILDING" and body["role"] == "OWNER"
    assert "secret" not in body and "token" not in str(body)
    assert [i["uid"] for i in c.get("/api/instances").get_json()] == [body["uid"]]
    r = c.post("/api/instances", json={"name": "second", "plan_id": plan_id, "experiment_ids": [exp_id]})
    assert r.status_code == 409 and r.get_json()["error"] == "quota_exceeded"

    other = api_client()
    other.login("bob", "bob-password")
    assert other.get(f"/api/instances/{body['uid']}").status_code == 404
    assert other.get("/api/instances").get_json() == []
    assert other.delete(f"/api/instances/{body['uid']}").status_code == 404


def test_bad_input_is_a_json_400_naming_the_field(db, clock, api_client) -> None:
    exp_id, plan_id = _seed(db, clock)
    c = api_client()
    c.login("alice", "alice-password")
    cases = [
        ({"name": "", "plan_id": plan_id}, "name"),
        ({"name": "x", "plan_id": "one"}, "plan_id"),
        ({"name": "x", "plan_id": plan_id, "screen_width": 10}, "screen_width"),
        ({"name": "x", "plan_id": plan_id, "keyboard_layout": "$(reboot)"}, "keyboard_layout"),
        ({"name": "x", "plan_id": plan_id, "experiment_ids": [exp_id], "root": True}, "root"),
        ({"name": "x" * 101, "plan_id": plan_id}, "name"),
        # past the database's 32-bit ids: refused up front, not overflowed in SQL
        ({"name": "x", "plan_id": 2**31}, "plan_id"),
        ({"name": "x", "plan_id": plan_id, "experiment_ids": [2**40]}, "experiment_ids.0"),
    ]
    for body, field in cases:
        r = c.post("/api/instances", json=body)
        assert r.status_code == 400, (body, r.status_code)
        assert r.get_json()["field"] == field
    r = c.post("/api/instances", data="not json", content_type="application/json")
    assert r.status_code == 400 and r.is_json
    r = c.post("/api/instances", json={"name": "x" * 2_000_000, "plan_id": 1})
    assert r.status_code == 413 and r.is_json
    assert c.get("/api/nothing-here").status_code == 404
    # every <int:...> route is bounded to the ids the database can hold
    for path in ("/api/tokens/99999999999999999999", "/api/notifications/4294967296/ack"):
        r = c.delete(path) if "tokens" in path else c.post(path)
        assert r.status_code == 404 and r.is_json, (path, r.status_code)


def test_csrf_is_required_for_cookie_sessions(db, clock, api_client) -> None:
    exp_id, plan_id = _seed(db, clock)
    c = api_client()
    c.login("alice", "alice-password")
    r = c.client.post("/api/instances", json={"name": "x", "plan_id": plan_id, "experiment_ids": [exp_id]})
    assert r.status_code == 403 and "CSRF" in r.get_json()["message"]
    r = c.client.post("/api/instances", json={"name": "x", "plan_id": plan_id, "experiment_ids": [exp_id]},
                      headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403
    assert c.get("/api/instances").get_json() == []
