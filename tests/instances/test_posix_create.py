"""A machine whose storage its owner could not use as themselves is refused at create time, with a
JSON 4xx that names what the account lacks, and nothing is stored."""

from __future__ import annotations

from sqlalchemy import func, select

from tests.factories import make_cloud, make_experiment, make_flavour, make_image, make_plan, make_user
from visa.instances.models import Instance


def _seed(db, clock, *, uid: int | None, cloud_config: dict | None = None):
    with db.unit_of_work() as s:
        cloud = make_cloud(s, clock)
        cloud.config = cloud_config or {}  # default: the site's storage, NFS
        alice = make_user(s, clock, "alice", password="alice-password", uid_number=uid, gid_number=uid)
        exp = make_experiment(s, members=[alice], proposal="ev280")
        plan = make_plan(s, make_image(s), make_flavour(s, "esrf.medium"), preset=True)
        return exp.id, plan.id


def _count(db) -> int:
    with db.sessionmaker() as s:
        return s.scalar(select(func.count(Instance.id)))


def test_no_uid_and_data_on_shared_storage_is_refused_naming_what_is_missing(db, clock, api_client) -> None:
    exp_id, plan_id = _seed(db, clock, uid=None)
    c = api_client()
    c.login("alice", "alice-password")
    r = c.post("/api/instances", json={"name": "analysis", "plan_id": plan_id, "experiment_ids": [exp_id]})
    assert r.status_code == 409 and r.is_json
    body = r.get_json()
    assert body["field"] == "uid_number" and body["details"]["missing"] == ["uid_number", "gid_number"]
    assert "no unix uid_number and gid_number" in body["message"] and "experiment" in body["message"]
    assert _count(db) == 0
    # Without data the machine needs no identity of the facility's.
    r = c.post("/api/instances", json={"name": "scratch", "plan_id": plan_id, "experiment_ids": []})
    assert r.status_code in (201, 403), r.get_json()  # 403: creating without an experiment is for staff
    assert r.status_code != 409


def test_on_host_directories_the_machine_is_made_unless_the_site_always_wants_a_uid(db, clock, app, api_client) -> None:
    exp_id, plan_id = _seed(db, clock, uid=None, cloud_config={"provisioning": {"mount_type": "bind"}})
    c = api_client()
    c.login("alice", "alice-password")
    r = c.post("/api/instances", json={"name": "analysis", "plan_id": plan_id, "experiment_ids": [exp_id]})
    assert r.status_code == 201, r.get_json()
    # ... unless the site says the uid is always required.
    app.extensions["visa"].settings.posix.require_uid = "always"  # this test's own settings
    r = c.post("/api/instances", json={"name": "again", "plan_id": plan_id, "experiment_ids": [exp_id]})
    assert r.status_code == 409 and r.get_json()["field"] == "uid_number"


def test_an_owner_with_a_uid_gets_the_machine(db, clock, api_client) -> None:
    exp_id, plan_id = _seed(db, clock, uid=23456)
    c = api_client()
    c.login("alice", "alice-password")
    r = c.post("/api/instances", json={"name": "analysis", "plan_id": plan_id, "experiment_ids": [exp_id]})
    assert r.status_code == 201, r.get_json()
