"""Instance attributes on both databases: administrators define keys and set values; the list
filters by them; bad input is refused with the field named and nothing written; all audited."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.admin.world import bearer, build
from visa.audit.models import AuditEvent
from visa.instances.models import InstanceAttribute


@pytest.fixture
def world(db, clock):
    return build(db, clock)


@pytest.fixture
def client(app):
    return app.test_client()


def test_administrators_define_set_filter_and_remove_attributes(client, world, db) -> None:
    h = bearer(world.admin_token)
    a1, b1 = world.uids["a1"], world.uids["b1"]
    r = client.post("/api/admin/attributes", json={"key": "project", "label": "Project code"}, headers=h)
    assert r.status_code == 201 and r.get_json() == {"key": "project", "label": "Project code", "instances": 0}
    assert client.post("/api/admin/attributes", json={"key": "course", "label": "Course"}, headers=h).status_code == 201
    r = client.post("/api/admin/attributes", json={"key": "project", "label": "Project"}, headers=h)  # relabel
    assert r.status_code == 200 and r.get_json()["label"] == "Project"

    for uid, value in ((a1, "PX-7"), (b1, "PX-8:beta")):
        r = client.put(f"/api/admin/instances/{uid}/attributes", json={"key": "project", "value": value}, headers=h)
        assert r.status_code == 200, r.get_json()
        assert r.get_json() == {"uid": uid, "attributes": [{"key": "project", "label": "Project", "value": value}]}
    client.put(f"/api/admin/instances/{a1}/attributes", json={"key": "course", "value": "HERCULES"}, headers=h)
    detail = client.get(f"/api/admin/instances/{a1}", headers=h).get_json()
    assert [(a["key"], a["value"]) for a in detail["attributes"]] == [("course", "HERCULES"), ("project", "PX-7")]

    def listed(query: str) -> list[str]:
        r = client.get(f"/api/admin/instances?{query}", headers=h)
        assert r.status_code == 200, r.get_json()
        return sorted(i["uid"] for i in r.get_json()["items"])

    assert listed("attribute=project:PX-7") == [a1]
    assert listed("attribute=project:PX-8:beta") == [b1]  # the value may hold ':'
    assert listed("attribute=project:PX-7&attribute=course:HERCULES") == [a1]
    assert listed("attribute=project:PX-8:beta&attribute=course:HERCULES") == []
    assert listed("attribute=course:nothing") == []
    listing = client.get("/api/admin/attributes", headers=h).get_json()
    assert [(d["key"], d["instances"]) for d in listing] == [("course", 1), ("project", 2)]

    r = client.delete(f"/api/admin/instances/{a1}/attributes/course", headers=h)
    assert r.status_code == 200 and [a["key"] for a in r.get_json()["attributes"]] == ["project"]
    assert client.delete("/api/admin/attributes/project", headers=h).status_code == 204
    assert client.get(f"/api/admin/instances/{a1}", headers=h).get_json()["attributes"] == []
    with db.sessionmaker() as s:
        assert s.scalars(select(InstanceAttribute)).all() == []
        events = s.scalars(select(AuditEvent).where(AuditEvent.action.in_(
            ["attribute.define", "attribute.delete", "instance.attribute"])).order_by(AuditEvent.id)).all()
        assert [e.action for e in events] == ["attribute.define"] * 3 + ["instance.attribute"] * 4 + ["attribute.delete"]
        assert events[3].details == {"key": "project", "old": None, "new": "PX-7"} and events[3].target_id == a1


def test_bad_attributes_are_refused_naming_the_field_and_nothing_is_written(client, world, db) -> None:
    h = bearer(world.admin_token)
    a1 = world.uids["a1"]
    client.post("/api/admin/attributes", json={"key": "project", "label": "Project"}, headers=h)
    url = f"/api/admin/instances/{a1}/attributes"
    for body, field in (
        ({"key": "nosuchkey", "value": "x"}, "key"),  # not defined
        ({"key": "project", "value": "x" * 256}, "value"),  # too long
        ({"key": "project", "value": ""}, "value"),
        ({"key": "Project Code", "value": "x"}, "key"),
        ({"key": "project", "value": "x", "label": "y"}, "label"),
    ):
        r = client.put(url, json=body, headers=h)
        assert r.status_code == 400 and r.get_json()["field"] == field, (body, r.get_json())
    for body, field in (({"key": "9lives", "label": "x"}, "key"), ({"key": "k" * 65, "label": "x"}, "key"),
                        ({"key": "ok", "label": "x" * 101}, "label"), ({"key": "ok"}, "label")):
        r = client.post("/api/admin/attributes", json=body, headers=h)
        assert r.status_code == 400 and r.get_json()["field"] == field, (body, r.get_json())
    for query in ("attribute=nosuchkey:x", "attribute=project", "attribute=project:", f"attribute=project:{'x' * 256}"):
        r = client.get(f"/api/admin/instances?{query}", headers=h)
        assert r.status_code == 400 and r.get_json()["field"] == "attribute", (query, r.get_json())
    assert client.delete(f"{url}/project", headers=h).status_code == 404  # never set
    assert client.delete("/api/admin/attributes/nosuchkey", headers=h).status_code == 404
    # Users may neither define, set nor filter.
    u = bearer(world.user_token)
    assert client.post("/api/admin/attributes", json={"key": "mine", "label": "x"}, headers=u).status_code == 403
    assert client.put(url, json={"key": "project", "value": "x"}, headers=u).status_code == 403
    assert client.get("/api/admin/instances?attribute=project:x", headers=u).status_code == 403
    with db.sessionmaker() as s:
        assert s.scalars(select(InstanceAttribute)).all() == []


def test_the_admin_pages_show_and_filter_attributes(client, world, api_client) -> None:
    h = bearer(world.admin_token)
    a1 = world.uids["a1"]
    client.post("/api/admin/attributes", json={"key": "project", "label": "Project code"}, headers=h)
    client.put(f"/api/admin/instances/{a1}/attributes", json={"key": "project", "value": "PX-<7>"}, headers=h)
    admin = api_client()
    assert admin.login("root", "root-password").status_code == 200
    page = admin.get(f"/admin/instances/{a1}").get_data(as_text=True)
    assert "Project code" in page and "PX-&lt;7&gt;" in page and 'data-testid="attribute-set"' in page
    listing = admin.get("/admin/instances", query_string={"attribute": "project:PX-<7>"}).get_data(as_text=True)
    assert f'data-uid="{a1}"' in listing and listing.count("data-uid=") == 1
    assert 'data-attribute="project"' in listing
