"""Open data on request, on both databases: others' experiments whose embargo has ended are
stored on the instance and mounted raw and read-only; embargoed or unknown ones are refused
with nothing stored; the search finds only open data."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from tests.factories import actor, make_cloud, make_experiment, make_flavour, make_image, make_plan, make_user
from tests.provisioning.cloudinit import validate
from visa.audit.models import AuditEvent
from visa.db import Database
from visa.errors import Forbidden, InvalidInput
from visa.instances import service
from visa.instances.models import Instance
from visa.instances.schemas import CreateInstance
from visa.instances.spec import render_for_operator, server_spec
from visa.users.models import User


@pytest.fixture
def world(db: Database, clock) -> SimpleNamespace:
    """alice has ev280 (no release date); bob's hc4321 opened 30 days ago, hc5555 opens in 100
    days, ma1111 never; alice's own ev100 opened 400 days ago."""
    now = clock.now()
    with db.unit_of_work() as s:
        make_cloud(s, clock)
        alice = make_user(s, clock, "alice", password="alice-pw")
        bob = make_user(s, clock, "bob", password="bob-pw")
        w = SimpleNamespace(
            mine=make_experiment(s, members=[alice], proposal="ev280", instrument="id21").id,
            opened=make_experiment(s, members=[bob], proposal="hc4321", instrument="id11",
                                   public_at=now - timedelta(days=30)).id,
            embargoed=make_experiment(s, members=[bob], proposal="hc5555", instrument="id11",
                                      public_at=now + timedelta(days=100)).id,
            never=make_experiment(s, members=[bob], proposal="ma1111", instrument="id16a").id,
            own_open=make_experiment(s, members=[alice], proposal="ev100", instrument="bm05",
                                     public_at=now - timedelta(days=400)).id,
            plan=make_plan(s, make_image(s), make_flavour(s, "esrf.medium"), preset=True).id,
        )
        w.embargo_ends = (now + timedelta(days=100)).date().isoformat()
        return w


def _create(s, clock, settings, username: str, plan: int, experiments: list[int], open_data: list[int]) -> Instance:
    user = s.scalar(select(User).where(User.username == username))
    data = CreateInstance(name="analysis", plan_id=plan, experiment_ids=experiments, open_data_ids=open_data)
    return service.create_instance(actor(user, clock), s, clock, settings, data)


def _instances(db: Database) -> int:
    with db.sessionmaker() as s:
        return s.scalar(select(func.count(Instance.id))) or 0


def test_open_data_is_stored_and_mounted_raw_and_read_only(world, db, clock, settings, tmp_path) -> None:
    with db.unit_of_work() as s:
        uid = _create(s, clock, settings, "alice", world.plan, [world.mine], [world.opened, world.opened]).uid
    with db.unit_of_work() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == uid))
        assert [e.id for e in inst.open_data_experiments] == [world.opened]
        assert [e.id for e in inst.experiments] == [world.mine]
        event = s.scalar(select(AuditEvent).where(AuditEvent.action == "instance.create"))
        assert event.details["open_data"] == [inst.open_data_experiments[0].external_id]

        spec = server_spec(inst, settings, clock.now())
        mounts = {m.target: m for m in spec.mounts}
        assert mounts["/data/visitor/hc4321/id11"].read_only
        assert "/data/processed/hc4321/id11" not in mounts
        assert not mounts["/data/processed/ev280/id21"].read_only  # the member's own area is still there
        # The same mounts in the user-data, which cloud-init accepts.
        config = validate(spec.user_data, tmp_path)
        fstab = {m[1]: m for m in config["mounts"]}
        assert "ro" in fstab["/data/visitor/hc4321/id11"][3].split(",")
        assert sorted(fstab) == sorted(mounts)
        # Operators preview the same user-data.
        preview = render_for_operator(s, uid, settings.provisioning)
        assert "/data/visitor/hc4321/id11" in preview and "/data/processed/hc4321" not in preview


def test_embargoed_or_unknown_open_data_is_refused_and_nothing_stored(world, db, clock, settings) -> None:
    cases = [
        (world.embargoed, Forbidden, f"experiment {world.embargoed} is under embargo until {world.embargo_ends}"),
        (world.never, Forbidden, f"experiment {world.never} has no release date"),
        (world.mine, Forbidden, "experiments you are a member of go in experiment_ids"),
        (999_999, InvalidInput, "unknown experiment(s): [999999]"),
    ]
    for experiment_id, error, text in cases:
        with pytest.raises(error) as err, db.unit_of_work() as s:
            _create(s, clock, settings, "alice", world.plan, [world.own_open], [world.opened, experiment_id])
        assert err.value.field == "open_data_ids"
        assert text in err.value.message
        assert "hc5555" not in err.value.message and "bob" not in err.value.message
    assert _instances(db) == 0


def test_an_experiment_attached_as_ones_own_is_not_duplicated(world, db, clock, settings) -> None:
    with db.unit_of_work() as s:
        inst = _create(s, clock, settings, "alice", world.plan, [world.own_open], [world.own_open, world.opened])
        assert [e.id for e in inst.open_data_experiments] == [world.opened]
        targets = [m.target for m in server_spec(inst, settings, clock.now()).mounts]
        assert targets == ["/data/visitor/ev100/bm05", "/data/processed/ev100/bm05", "/data/visitor/hc4321/id11"]


def test_embargo_brought_back_fails_the_create_rather_than_mount(world, db, clock, settings) -> None:
    with db.unit_of_work() as s:
        inst = _create(s, clock, settings, "alice", world.plan, [world.mine], [world.opened])
        inst.open_data_experiments[0].proposal.public_at = clock.now() + timedelta(days=1)
        with pytest.raises(Forbidden, match="not open yet"):
            server_spec(inst, settings, clock.now())


# --- REST ------------------------------------------------------------------------------------------


def _logged_in(api_client, who: str):
    c = api_client()
    assert c.login(who, f"{who}-pw").status_code == 200
    return c


def test_api_creates_with_open_data_and_refuses_bad_ids(world, db, api_client) -> None:
    c = _logged_in(api_client, "alice")

    def create(open_data: object):
        return c.post("/api/instances", json={"name": "x", "plan_id": world.plan, "experiment_ids": [world.mine],
                                              "open_data_ids": open_data})

    for open_data, status, field in [
        ([999_999], 400, "open_data_ids"),
        ([2**40], 400, "open_data_ids.0"),  # past the database's ids: refused up front
        ([0], 400, "open_data_ids.0"),
        (["one"], 400, "open_data_ids.0"),
        (list(range(1, 22)), 400, "open_data_ids"),
        ([world.embargoed], 403, "open_data_ids"),
    ]:
        r = create(open_data)
        assert (r.status_code, r.is_json) == (status, True), (open_data, r.status_code, r.get_data(as_text=True))
        assert r.get_json()["field"] == field, (open_data, r.get_json())
    assert world.embargo_ends in create([world.embargoed]).get_json()["message"]
    assert _instances(db) == 0

    r = create([world.opened])
    assert r.status_code == 201, r.get_json()
    shown = r.get_json()["open_data"]
    assert [(e["id"], e["proposal"], e["instrument"]) for e in shown] == [(world.opened, "hc4321", "id11")]
    assert c.get(f"/api/instances/{r.get_json()['uid']}").get_json()["open_data"] == shown

    doc = c.get("/api/openapi.json").get_json()
    assert "open_data_ids" in doc["components"]["schemas"]["CreateInstance"]["properties"]
    assert not doc["paths"]["/api/experiments/open-data"]["get"].get("x-undocumented")


def test_search_finds_only_open_data(world, api_client) -> None:
    c = _logged_in(api_client, "alice")

    def found(query: str = "") -> list[str]:
        r = c.get(f"/api/experiments/open-data{query}")
        assert r.status_code == 200, r.get_json()
        return [e["proposal"] for e in r.get_json()]

    assert found() == ["hc4321", "ev100"]  # most recently opened first; never an embargoed one
    assert found("?q=HC43") == ["hc4321"]
    assert found("?q=Proposal+ev") == ["ev100"]  # proposal titles too
    assert found("?q=%25") == [] and found("?q=_") == []  # LIKE wildcards are plain characters
    assert found("?q=BM05") == ["ev100"]  # instruments too
    assert found("?instrument=bm05") == ["ev100"]
    assert found("?instrument=id16a") == []
    assert found("?limit=1") == ["hc4321"]
    assert found("?q=&instrument=") == ["hc4321", "ev100"]  # an untouched filter form
    # The same fields as the caller's own experiments.
    one = c.get("/api/experiments/open-data?q=ev100").get_json()[0]
    own = next(e for e in c.get("/api/experiments").get_json() if e["proposal"] == "ev100")
    assert one == own and one["open_data"] is True and one["public_at"].startswith("2024-")

    for query, field in [("limit=0", "limit"), ("limit=51", "limit"), ("limit=many", "limit"),
                         ("instrument=../etc", "instrument"), ("q=" + "x" * 101, "q")]:
        r = c.get(f"/api/experiments/open-data?{query}")
        assert (r.status_code, r.is_json) == (400, True), query
        assert r.get_json()["field"] == field, (query, r.get_json())
    assert api_client().get("/api/experiments/open-data").status_code == 401
