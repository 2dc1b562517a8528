"""Editing an instance after creation (PATCH /api/instances/<uid>), on both databases: the owner
only, each bad field named in a JSON 4xx with nothing written, each change audited."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.factories import make_cloud, make_experiment, make_flavour, make_image, make_plan, make_user
from visa.audit.models import AuditEvent
from visa.instances.models import Instance


@pytest.fixture
def made(db, clock, api_client):
    with db.unit_of_work() as s:
        make_cloud(s, clock)
        alice = make_user(s, clock, "alice", password="alice-password")
        bob = make_user(s, clock, "bob", password="bob-password")
        exp = make_experiment(s, members=[alice, bob], proposal="ev280")
        plan = make_plan(s, make_image(s), make_flavour(s, "esrf.medium"), preset=True)
    owner = api_client()
    owner.login("alice", "alice-password")
    r = owner.post("/api/instances", json={"name": "analysis", "plan_id": plan.id, "experiment_ids": [exp.id],
                                           "comments": "first try"})
    assert r.status_code == 201, r.get_json()
    return owner, r.get_json()["uid"]


def _row(db, uid: str) -> Instance:
    with db.sessionmaker() as s:
        return s.scalar(select(Instance).where(Instance.uid == uid))


def test_the_owner_changes_name_comments_keyboard_and_screen(db, made) -> None:
    owner, uid = made
    r = owner.patch(f"/api/instances/{uid}", json={"name": "fit of run 12", "comments": "with the new mask",
                                                   "keyboard_layout": "fr-fr", "screen_width": 1920,
                                                   "screen_height": 1080})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert (body["name"], body["comments"], body["keyboard_layout"], body["screen"]) == (
        "fit of run 12", "with the new mask", "fr-fr", {"width": 1920, "height": 1080})
    row = _row(db, uid)
    assert (row.name, row.keyboard_layout, row.screen_width) == ("fit of run 12", "fr-fr", 1920)
    r = owner.patch(f"/api/instances/{uid}", json={"name": "  trimmed  "})
    assert r.get_json()["name"] == "trimmed" and r.get_json()["comments"] == "with the new mask"
    with db.sessionmaker() as s:
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "instance.edit").order_by(AuditEvent.id)))
    assert [sorted(e.details["new"]) for e in events] == [
        ["comments", "keyboard_layout", "name", "screen_height", "screen_width"], ["name"]]
    assert events[0].details["new"]["comments"] == len("with the new mask")  # free text not copied


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": None}, "name"),
        ({"keyboard_layout": "klingon"}, "keyboard_layout"),
        ({"screen_width": 100}, "screen_width"),
        ({"screen_height": 99999}, "screen_height"),
        ({"screen_width": "wide"}, "screen_width"),
        ({"comments": "x" * 2001}, "comments"),
        ({"plan_id": 2}, "plan_id"),
        ({"name": "ok", "secret": "mine"}, "secret"),
        ({}, ""),
    ],
)
def test_bad_fields_are_named_and_nothing_is_written(db, made, payload: dict, field: str) -> None:
    owner, uid = made
    before = _row(db, uid)
    r = owner.patch(f"/api/instances/{uid}", json={"comments": "changed", **payload} if payload else {})
    assert r.status_code == 400 and r.is_json, r.get_json()
    err = r.get_json()
    assert field in (err.get("field") or "") or field in err["message"], err
    after = _row(db, uid)
    assert (after.name, after.comments, after.keyboard_layout, after.screen_width, after.screen_height) == (
        before.name, before.comments, before.keyboard_layout, before.screen_width, before.screen_height)


def test_only_the_owner_edits(db, made, api_client) -> None:
    owner, uid = made
    bob = api_client()
    bob.login("bob", "bob-password")
    assert bob.patch(f"/api/instances/{uid}", json={"name": "mine now"}).status_code == 404  # not even visible
    assert owner.post(f"/api/instances/{uid}/members", json={"username": "bob", "role": "GUEST"}).status_code == 201
    r = bob.patch(f"/api/instances/{uid}", json={"name": "mine now"})
    assert r.status_code == 403 and r.is_json
    assert _row(db, uid).name == "analysis"
    anonymous = api_client()
    assert anonymous.patch(f"/api/instances/{uid}", json={"name": "x"}).status_code in (401, 403)  # CSRF first
    assert _row(db, uid).name == "analysis"
