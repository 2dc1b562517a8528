"""The admin REST API on both databases: who may use it, filters and pages, actions, catalogue, audit."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.admin.world import bearer, build
from visa.instances.models import CommandAction, InstanceCommand


@pytest.fixture
def world(db, clock):
    return build(db, clock)


@pytest.fixture
def client(app):
    return app.test_client()


def test_admin_endpoints_refuse_users_and_strangers(client, world) -> None:
    for url in ("/api/admin/instances", "/api/admin/users", "/api/admin/flavours", "/api/admin/audit",
                "/api/admin/stats", "/api/admin/notifications", f"/api/admin/instances/{world.uids['a1']}"):
        assert client.get(url).status_code == 401, url
        r = client.get(url, headers=bearer(world.user_token))
        assert r.status_code == 403 and r.is_json, url
    r = client.post(f"/api/admin/instances/{world.uids['b1']}/actions", json={"action": "delete"},
                    headers=bearer(world.user_token))
    assert r.status_code == 403
    r = client.post("/api/admin/users/alice/roles", json={"role": "ADMIN"}, headers=bearer(world.user_token))
    assert r.status_code == 403


def test_instances_filter_sort_paginate(client, world) -> None:
    h = bearer(world.admin_token)
    body = client.get("/api/admin/instances", headers=h).get_json()
    assert body["total"] == 3 and [i["name"] for i in body["items"]] == ["broken", "second", "first"]
    body = client.get("/api/admin/instances?sort=created_at&per_page=2&page=1", headers=h).get_json()
    assert [i["name"] for i in body["items"]] == ["first", "second"] and body["total"] == 3
    body = client.get("/api/admin/instances?sort=created_at&per_page=2&page=2", headers=h).get_json()
    assert [i["name"] for i in body["items"]] == ["broken"]
    assert client.get("/api/admin/instances?owner=alice", headers=h).get_json()["total"] == 2
    assert client.get("/api/admin/instances?state=ERROR&state=STOPPED", headers=h).get_json()["total"] == 2
    assert client.get("/api/admin/instances?image=jupyterlab", headers=h).get_json()["total"] == 1
    assert client.get("/api/admin/instances?flavour=esrf.medium&owner=bob", headers=h).get_json()["total"] == 1
    assert client.get("/api/admin/instances?cloud=local", headers=h).get_json()["total"] == 3
    assert client.get("/api/admin/instances?q=sec", headers=h).get_json()["total"] == 1
    assert client.get("/api/admin/instances?q=%25", headers=h).get_json()["total"] == 0
    names = [i["owner"]["username"] for i in client.get("/api/admin/instances?sort=-owner", headers=h).get_json()["items"]]
    assert names == sorted(names, reverse=True)
    item = client.get("/api/admin/instances?owner=bob", headers=h).get_json()["items"][0]
    assert item["members"] == [{"username": "bob", "full_name": "Bob Builder", "role": "OWNER"}]
    assert "secret" not in str(item)
    for bad in ("sort=secret", "state=SLEEPING", "per_page=1000", "page=0"):
        r = client.get(f"/api/admin/instances?{bad}", headers=h)
        assert r.status_code == 400 and r.is_json, bad


def test_actions_and_termination_change_are_audited(client, world, db, clock) -> None:
    h = bearer(world.admin_token)
    a1, a2, b1 = world.uids["a1"], world.uids["a2"], world.uids["b1"]
    r = client.post(f"/api/admin/instances/{a1}/actions", json={"action": "reboot"}, headers=h)
    assert r.status_code == 202 and r.get_json()["state"] == "REBOOTING"
    assert client.post(f"/api/admin/instances/{a2}/actions", json={"action": "start"}, headers=h).status_code == 202
    r = client.post(f"/api/admin/instances/{a2}/actions", json={"action": "start"}, headers=h)
    assert r.status_code == 409  # already STARTING: the same rules as for owners
    r = client.post(f"/api/admin/instances/{b1}/actions", json={"action": "delete"}, headers=h)
    assert r.status_code == 202 and r.get_json()["state"] == "DELETING"
    assert client.post(f"/api/admin/instances/{b1}/actions", json={"action": "explode"}, headers=h).status_code == 400

    new = (clock.now() + timedelta(days=30)).isoformat()
    r = client.put(f"/api/admin/instances/{a1}/termination", json={"terminates_at": new, "reason": "beamtime"},
                   headers=h)
    assert r.status_code == 200 and r.get_json()["terminates_at"].startswith(new[:19])
    for bad in ((clock.now() - timedelta(hours=1)).isoformat(), "2026-05-01T12:00:00", "tomorrow",
                (clock.now() + timedelta(days=400)).isoformat()):
        r = client.put(f"/api/admin/instances/{a1}/termination", json={"terminates_at": bad}, headers=h)
        assert r.status_code == 400 and r.get_json()["field"].startswith("terminates_at"), bad

    detail = client.get(f"/api/admin/instances/{a1}", headers=h).get_json()
    assert [c["action"] for c in detail["commands"]] == ["REBOOT"] and detail["commands"][0]["actor"] == "root"
    assert detail["experiments_detail"][0]["proposal"] == "ev280"
    assert {e["action"] for e in detail["history"]} >= {"instance.reboot", "instance.termination"}
    audit = client.get("/api/admin/audit?action=instance.termination", headers=h).get_json()
    assert audit["total"] == 1 and audit["items"][0]["details"]["reason"] == "beamtime"
    assert audit["items"][0]["actor"] == "root" and audit["items"][0]["target_id"] == a1
    assert client.get("/api/admin/audit?action=instance.&per_page=2", headers=h).get_json()["total"] == 4
    with db.sessionmaker() as s:
        actions = sorted(c.action for c in s.query(InstanceCommand).all())
    assert actions == sorted([CommandAction.REBOOT, CommandAction.START, CommandAction.DELETE])


def test_userdata_preview_masks_secrets(client, world) -> None:
    r = client.get(f"/api/admin/instances/{world.uids['a1']}/userdata", headers=bearer(world.admin_token))
    assert r.status_code == 200, r.get_json()
    assert "#cloud-config" in r.get_json()["user_data"]
    assert client.get("/api/admin/instances/nope/userdata", headers=bearer(world.admin_token)).status_code == 404


def test_users_search_roles_and_quota(client, world, clock) -> None:
    h = bearer(world.admin_token)
    body = client.get("/api/admin/users?q=lid", headers=h).get_json()
    assert [u["username"] for u in body["items"]] == ["alice"] and body["items"][0]["instances"] == 2
    assert client.get("/api/admin/users?per_page=1&page=2", headers=h).get_json()["items"][0]["username"] == "bob"
    assert [u["username"] for u in client.get("/api/admin/users?role=ADMIN", headers=h).get_json()["items"]] == ["root"]
    r = client.post("/api/admin/users/bob/roles", json={"role": "GUEST"}, headers=h)
    assert r.status_code == 400 and r.get_json()["field"] == "expires_at"
    until = (clock.now() + timedelta(days=7)).isoformat()
    r = client.post("/api/admin/users/bob/roles", json={"role": "GUEST", "expires_at": until}, headers=h)
    assert r.status_code == 200 and r.get_json()["roles"][0]["role"] == "GUEST"
    assert client.get("/api/admin/users?role=GUEST", headers=h).get_json()["total"] == 1
    r = client.delete("/api/admin/users/bob/roles/GUEST", headers=h)
    assert r.status_code == 200 and r.get_json()["roles"] == []
    assert client.delete("/api/admin/users/bob/roles/EMPEROR", headers=h).status_code == 400
    r = client.put("/api/admin/users/bob/quota", json={"quota": -1}, headers=h)
    assert r.status_code == 200 and r.get_json()["instance_quota"] == -1
    assert client.put("/api/admin/users/bob/quota", json={"quota": -2}, headers=h).status_code == 400
    assert client.get("/api/admin/users/nobody", headers=h).status_code == 404
    assert client.get("/api/admin/audit?action=role.grant&target_type=user", headers=h).get_json()["total"] == 1


def test_flavour_limited_to_a_role_reaches_the_user(client, world) -> None:
    h = bearer(world.admin_token)
    flavour = {"name": "esrf.gpu.test", "cores": 8, "memory_gb": 32, "gpu": {"kind": "A40", "count": 1},
               "cloud_flavour": "g1.test", "limits": {"roles": ["STAFF"]}, "lifetimes": [{"hours": 48}]}
    r = client.post("/api/admin/flavours", json=flavour, headers=h)
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["memory_mb"] == 32768 and r.get_json()["limits"]["roles"] == ["STAFF"]
    assert client.post("/api/admin/flavours", json=flavour, headers=h).status_code == 409
    # The same validation as the catalogue files, naming the field.
    for bad, field in (({**flavour, "name": "Bad Name"}, "name"), ({**flavour, "cores": 0}, "cores"),
                       ({**flavour, "limits": {"roles": ["EMPEROR"]}}, "limits.roles.0"),
                       ({**flavour, "memory_gb": 0.0001}, "memory_gb"),  # 0 MB once stored
                       ({**flavour, "cloud": "nowhere", "name": "x.y"}, None), ({**flavour, "extra": 1}, "extra")):
        r = client.post("/api/admin/flavours", json=bad, headers=h)
        assert r.status_code == 400, bad
        if field:
            assert r.get_json()["field"] == field
    r = client.post("/api/admin/plans", json={"image": "desktop", "flavour": "esrf.gpu.test"}, headers=h)
    assert r.status_code == 201
    plan_id = r.get_json()["id"]
    user = {"Authorization": f"Bearer {world.user_token}"}
    assert plan_id not in [p["id"] for p in client.get("/api/plans", headers=user).get_json()]
    r = client.put("/api/admin/flavours/esrf.gpu.test/limits", json={"roles": []}, headers=h)
    assert r.status_code == 200 and r.get_json()["limits"] == {"roles": [], "groups": [], "instruments": []}
    plans = client.get("/api/plans", headers=user).get_json()
    assert {"id": plan_id, "lifetime": 48} == {"id": plan_id, "lifetime": next(
        p["max_lifetime_hours"] for p in plans if p["id"] == plan_id)}
    r = client.put("/api/admin/flavours/esrf.gpu.test/lifetimes", json={"lifetimes": [{"hours": 0}]}, headers=h)
    assert r.status_code == 400
    r = client.patch(f"/api/admin/plans/{plan_id}", json={"preset": True}, headers=h)
    assert r.status_code == 200 and r.get_json()["preset"] is True
    presets = [p for p in client.get("/api/admin/plans", headers=h).get_json() if p["preset"]]
    assert [p["id"] for p in presets] == [plan_id]
    assert client.delete(f"/api/admin/plans/{plan_id}", headers=h).get_json()["enabled"] is False
    assert plan_id not in [p["id"] for p in client.get("/api/plans", headers=user).get_json()]
    assert client.delete("/api/admin/flavours/esrf.gpu.test", headers=h).get_json()["visible"] is False
    flavours = {f["name"]: f for f in client.get("/api/admin/flavours", headers=h).get_json()}
    assert flavours["esrf.medium"]["instances"] == 2 and flavours["esrf.gpu.test"]["visible"] is False
    r = client.put("/api/admin/flavours/esrf.medium", json={**flavour, "name": "esrf.medium"}, headers=h)
    assert r.status_code == 200 and r.get_json()["cores"] == 8
    r = client.put("/api/admin/flavours/esrf.medium", json=flavour, headers=h)
    assert r.status_code == 400 and r.get_json()["field"] == "name"


def test_images_through_the_api(client, world) -> None:
    h = bearer(world.admin_token)
    image = {"name": "bliss", "environment": "Bliss", "version": "2.1", "cloud_image": "bliss-2.1",
             "protocols": [{"protocol": "VNC", "port": 5901}], "plans": [{"flavour": "esrf.large"}]}
    r = client.post("/api/admin/images", json=image, headers=h)
    assert r.status_code == 201, r.get_json()
    assert [p for p in client.get("/api/admin/plans", headers=h).get_json() if p["image"] == "bliss"][0]["enabled"]
    r = client.post("/api/admin/images", json={**image, "name": "other", "plans": [{"flavour": "nope"}]}, headers=h)
    assert r.status_code == 400 and r.get_json()["field"] == "plans"
    r = client.post("/api/admin/images", json={**image, "name": "x", "protocols": []}, headers=h)
    assert r.status_code == 400 and r.get_json()["field"] == "protocols"
    for bad, field in (([{"name": "dash", "port": 80}], "web_services.0.port"),
                       ([{"name": "-dash", "port": 8050}], "web_services.0.name"),
                       ([{"name": "vnc", "port": 8050}], "web_services")):
        r = client.put("/api/admin/images/bliss", json={**image, "web_services": bad}, headers=h)
        assert r.status_code == 400 and r.get_json()["field"] == field, r.get_json()
    web = [{"name": "dash", "port": 8050}]
    r = client.put("/api/admin/images/bliss", json={**image, "web_services": web}, headers=h)
    assert r.status_code == 200 and r.get_json()["web_services"] == web
    r = client.put("/api/admin/images/bliss", json={**image, "plans": []}, headers=h)
    assert r.status_code == 200 and r.get_json()["web_services"] == []
    assert not [p for p in client.get("/api/admin/plans", headers=h).get_json() if p["image"] == "bliss"][0]["enabled"]
    assert client.delete("/api/admin/images/bliss", headers=h).get_json()["visible"] is False
    assert client.get("/api/admin/images/none", headers=h).status_code == 404


def test_notifications_for_users_and_admins(client, world, clock) -> None:
    h, u = bearer(world.admin_token), bearer(world.user_token)
    r = client.post("/api/admin/notifications", json={"message": "Maintenance on Monday", "level": "WARNING",
                                                       "kind": "MODAL"}, headers=h)
    assert r.status_code == 201
    nid = r.get_json()["id"]
    later = {"message": "Later", "active_from": (clock.now() + timedelta(days=1)).isoformat()}
    assert client.post("/api/admin/notifications", json=later, headers=h).status_code == 201
    assert client.post("/api/admin/notifications", json=later, headers=u).status_code == 403
    assert [n["message"] for n in client.get("/api/notifications", headers=u).get_json()] == ["Maintenance on Monday"]
    assert client.post(f"/api/notifications/{nid}/ack", headers=u).status_code == 200
    assert client.post(f"/api/notifications/{nid}/ack", headers=u).status_code == 200  # twice is fine
    assert client.get("/api/notifications", headers=u).get_json() == []
    assert client.get("/api/notifications", headers=h).get_json()[0]["id"] == nid  # not acknowledged by root
    assert client.get("/api/admin/notifications", headers=h).get_json()[1]["acknowledged"] == 1
    r = client.put(f"/api/admin/notifications/{nid}", json={"message": "Maintenance moved to Tuesday"}, headers=h)
    assert r.status_code == 200
    assert [n["id"] for n in client.get("/api/notifications", headers=u).get_json()] == [nid]  # changed: shown again
    bad = {"message": "x", "active_from": "2026-02-01T00:00:00Z", "active_until": "2026-01-01T00:00:00Z"}
    assert client.post("/api/admin/notifications", json=bad, headers=h).get_json()["field"] == "active_until"
    assert client.delete(f"/api/admin/notifications/{nid}", headers=h).status_code == 200
    assert client.get("/api/notifications", headers=u).get_json() == []
    assert client.post(f"/api/notifications/{nid}/ack", headers=u).status_code == 404


def test_stats_and_clouds(client, world) -> None:
    h = bearer(world.admin_token)
    stats = client.get("/api/admin/stats", headers=h).get_json()
    assert stats["instances"] == 3 and stats["by_state"] == {"ACTIVE": 1, "STOPPED": 1, "ERROR": 1}
    assert stats["by_image"] == {"desktop": 2, "jupyterlab": 1} and stats["by_cloud"] == {"local": 3}
    cloud = stats["clouds"][0]
    assert cloud["name"] == "local" and cloud["usage"]["instances"] == 1 and cloud["usage"]["cores"] == 4
    clouds = client.get("/api/admin/clouds", headers=h).get_json()
    assert clouds[0]["status"] in ("ok", "unavailable")


def test_a_bad_provisioning_override_is_a_400_naming_the_key(client, world, db) -> None:
    from sqlalchemy import select

    from visa.clouds.models import Cloud

    h = bearer(world.admin_token)
    bad = {"kind": "local", "config": {"provisioning": {"mount_type": "bind", "raw_mount_templat": "/srv/{proposal}"}}}
    r = client.put("/api/admin/clouds/spare", json=bad, headers=h)
    assert r.status_code == 400 and r.get_json()["field"] == "config.provisioning.raw_mount_templat"
    r = client.put("/api/admin/clouds/spare", json={"kind": "local", "config": {"provisioning": {"mount_type": "smb"}}},
                   headers=h)
    assert r.status_code == 400 and r.get_json()["field"] == "config.provisioning.mount_type"
    with db.sessionmaker() as s:
        assert s.scalar(select(Cloud).where(Cloud.name == "spare")) is None  # nothing stored
    good = {"kind": "local", "config": {"provisioning": {"mount_type": "bind"}}}
    r = client.put("/api/admin/clouds/spare", json=good, headers=h)
    assert r.status_code == 200 and r.get_json() == {"name": "spare", "kind": "local", "enabled": True}
    assert client.put("/api/admin/clouds/spare", json=good, headers=bearer(world.user_token)).status_code == 403


def test_a_long_list_counts_up_to_the_limit_and_pages_on(client, world, monkeypatch) -> None:
    import visa.paging

    h = bearer(world.admin_token)
    monkeypatch.setattr(visa.paging, "COUNT_LIMIT", 2)  # 3 instances: more than the limit
    body = client.get("/api/admin/instances?sort=created_at&per_page=1", headers=h).get_json()
    assert (body["total"], body["total_exact"]) == (2, False)
    assert [i["name"] for i in body["items"]] == ["first"]
    third = client.get("/api/admin/instances?sort=created_at&per_page=1&page=3", headers=h).get_json()
    assert [i["name"] for i in third["items"]] == ["broken"]  # past the count, pages still answer
    exact = client.get("/api/admin/instances?owner=alice", headers=h).get_json()
    assert (exact["total"], exact["total_exact"]) == (2, True)  # as many as the limit: exact
    monkeypatch.setattr(visa.paging, "COUNT_LIMIT", 10_000)
    assert client.get("/api/admin/instances", headers=h).get_json()["total_exact"] is True


def test_an_openstack_configuration_with_an_unknown_key_is_a_400_naming_it(client, world, db) -> None:
    from sqlalchemy import select

    from visa.clouds.models import Cloud

    h = bearer(world.admin_token)
    config = {"auth_type": "v3applicationcredential", "auth_url": "https://keystone.example.org:5000/v3",
              "application_credential_id": "abc", "application_credential_secret": {"env": "OS_SECRET"}}
    r = client.put("/api/admin/clouds/site", json={"kind": "openstack", "config": {**config, "regoin_name": "N"}},
                   headers=h)
    assert r.status_code == 400 and r.get_json()["field"] == "config.regoin_name"
    assert "unknown key" in r.get_json()["message"]
    r = client.put("/api/admin/clouds/site", json={"kind": "openstack", "config": {**config, "project_name": "p"}},
                   headers=h)
    assert r.status_code == 400 and r.get_json()["field"] == "config.project_name"
    with db.sessionmaker() as s:
        assert s.scalar(select(Cloud).where(Cloud.name == "site")) is None  # nothing stored
    r = client.put("/api/admin/clouds/site", json={"kind": "openstack", "config": {**config, "region_name": "N"}},
                   headers=h)
    assert r.status_code == 200


def test_instrument_scientists_through_the_api(client, world, db) -> None:
    from sqlalchemy import select

    from visa.audit.models import AuditEvent

    h = bearer(world.admin_token)
    assert client.get("/api/admin/instruments", headers=bearer(world.user_token)).status_code == 403
    r = client.post("/api/admin/instruments/id21/scientists", json={"username": "alice"}, headers=h)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["scientists"][0]["username"] == "alice"
    assert "INSTRUMENT_SCIENTIST" in [g["role"] for g in client.get("/api/admin/users/alice", headers=h).get_json()["roles"]]
    body = client.get("/api/admin/instruments", headers=h).get_json()
    assert {i["name"]: [p["username"] for p in i["scientists"]] for i in body}["id21"] == ["alice"]

    r = client.post("/api/admin/instruments/id21/scientists", json={"username": "Alice Smith"}, headers=h)
    assert r.status_code == 400 and "username" in r.get_data(as_text=True)
    r = client.post("/api/admin/instruments/nope/scientists", json={"username": "alice"}, headers=h)
    assert r.status_code == 404 and "no instrument 'nope'" in r.get_data(as_text=True)
    r = client.post("/api/admin/instruments/id21/scientists", json={"username": "nobody"}, headers=h)
    assert r.status_code == 404

    r = client.delete("/api/admin/instruments/id21/scientists/alice", headers=h)
    assert r.status_code == 200 and r.get_json()["scientists"] == []
    with db.sessionmaker() as s:
        assert list(s.scalars(select(AuditEvent.action).where(AuditEvent.action.like("instrument.%"))
                              .order_by(AuditEvent.id))) == ["instrument.scientist.add", "instrument.scientist.remove"]
