"""The usage report: hours held per owner, proposal, instrument, flavour and cloud, from each
instance's state periods, clipped to the period asked for; checked against figures worked out
by hand on a frozen clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from tests.factories import make_experiment, make_flavour, make_plan
from tests.services import add_instance
from visa.actor import SYSTEM
from visa.catalogue.models import Image
from visa.clock import FrozenClock
from visa.errors import InvalidInput
from visa.instances.models import Instance, InstanceState, InstanceStatePeriod
from visa.services import Services
from visa.usage.schemas import UsageReportQuery
from visa.usage.service import report_csv, usage_report
from visa.users.models import User


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, 1, day, hour, minute, tzinfo=UTC)


def move(services: Services, clock: FrozenClock, iid: int, state: InstanceState, when: datetime, **fields) -> None:
    """A state change as the executor and the sync make one: the state and when it changed."""
    clock.set(when)
    with services.database.unit_of_work() as s:
        inst = s.get(Instance, iid)
        inst.state, inst.state_changed_at = state, when
        for name, value in fields.items():
            setattr(inst, name, value)


@pytest.fixture
def history(services: Services, world, clock: FrozenClock) -> dict[str, int]:
    """Five instances around the period of 2 January (00:00 to 24:00), clock then at 5 January.

    A: alice, small (4 cores, 4 GB), proposal P1. Active from 1 Jan 20:00, stopped 2 Jan 02:00,
       started 10:00 (STARTING, ACTIVE 10:05), stopped 3 Jan 04:00: 2 h + 14 h inside.
    B: sam, gpu (16 cores, 32 GB, 1 GPU), experiments of P1 (id21) and P2 (id16a): active
       2 Jan 12:00, in error 18:00: 6 h, half to each.
    C: alice, small, no experiment: active since 31 Dec, deleted 2 Jan 06:00: 6 h.
    D: alice, small, active 3 Jan 05:00 to 06:00 only: nothing inside.
    E: sam, small, stopped all along: nothing."""
    clock.set(at(1))
    with services.database.unit_of_work() as s:
        image = s.scalar(select(Image))
        gpu = make_plan(s, image, make_flavour(s, "gpu", cores=16, memory_mb=32768, gpu="NVIDIA A40")).id
        alice, sam = s.get(User, world["alice"]), s.get(User, world["sam"])
        p1 = make_experiment(s, members=[alice, sam], proposal="P1", instrument="id21")
        p2 = make_experiment(s, members=[sam], proposal="P2", instrument="id16a")
        clock.set(at(1, 20))
        a = add_instance(s, clock, world)
        a.experiments.append(p1)
        clock.set(datetime(2025, 12, 31, 12, tzinfo=UTC))
        c = add_instance(s, clock, world)
        e = add_instance(s, clock, world, "sam", state=InstanceState.STOPPED)
        ids = {"A": a.id, "C": c.id, "E": e.id}
    move(services, clock, ids["A"], InstanceState.STOPPED, at(2, 2))
    move(services, clock, ids["C"], InstanceState.DELETED, at(2, 6), deleted_at=at(2, 6))
    move(services, clock, ids["A"], InstanceState.STARTING, at(2, 10))
    move(services, clock, ids["A"], InstanceState.ACTIVE, at(2, 10, 5))
    clock.set(at(2, 12))
    with services.database.unit_of_work() as s:
        b = add_instance(s, clock, world, "sam", plan_id=gpu)
        b.experiments.extend([s.get(type(p1), p1.id), s.get(type(p2), p2.id)])
        ids["B"] = b.id
    move(services, clock, ids["B"], InstanceState.ERROR, at(2, 18))
    move(services, clock, ids["A"], InstanceState.STOPPED, at(3, 4))
    clock.set(at(3, 5))
    with services.database.unit_of_work() as s:
        ids["D"] = add_instance(s, clock, world).id
    move(services, clock, ids["D"], InstanceState.STOPPED, at(3, 6))
    clock.set(at(5))
    return ids


def report(services: Services, clock: FrozenClock, **query):
    with services.database.sessionmaker() as s:
        return usage_report(SYSTEM, s, clock, UsageReportQuery.model_validate({"from": at(2), "to": at(3), **query}))


def figures(row) -> tuple:
    return (row.key, row.instances, row.hours, row.core_hours, row.memory_gb_hours, row.gpu_hours)


def test_every_state_change_opens_a_period(services: Services, history: dict[str, int]) -> None:
    with services.database.sessionmaker() as s:
        a = s.scalars(select(InstanceStatePeriod).where(InstanceStatePeriod.instance_id == history["A"])
                      .order_by(InstanceStatePeriod.started_at)).all()
        c = s.scalars(select(InstanceStatePeriod).where(InstanceStatePeriod.instance_id == history["C"])).all()
    assert [(p.state, p.started_at, p.ended_at) for p in a] == [
        (InstanceState.ACTIVE, at(1, 20), at(2, 2)), (InstanceState.STOPPED, at(2, 2), at(2, 10)),
        (InstanceState.STARTING, at(2, 10), at(2, 10, 5)), (InstanceState.ACTIVE, at(2, 10, 5), at(3, 4)),
        (InstanceState.STOPPED, at(3, 4), None),
    ]
    # A deletion closes the last period and opens none.
    assert [(p.state, p.ended_at) for p in c] == [(InstanceState.ACTIVE, at(2, 6))]


def test_hours_by_proposal_split_among_experiments(services: Services, clock: FrozenClock, history) -> None:
    r = report(services, clock, by="proposal")
    assert (r.start, r.end) == (at(2), at(3))
    # P1: A's 16 h whole (4 cores, 4 GB) and half of B's 6 h (16 cores, 32 GB, 1 GPU).
    assert [figures(row) for row in r.rows] == [
        ("P1", 2, 19.0, 112.0, 160.0, 3.0),
        ("P2", 1, 3.0, 48.0, 96.0, 3.0),
        (None, 1, 6.0, 24.0, 24.0, 0.0),
    ]
    assert figures(r.total) == (None, 3, 28.0, 184.0, 280.0, 6.0)
    assert "STOPPED" not in r.states and "ACTIVE" in r.states and "STARTING" in r.states


@pytest.mark.parametrize(("by", "expected"), [
    ("owner", [("sam", 1, 6.0, 96.0, 192.0, 6.0), ("alice", 2, 22.0, 88.0, 88.0, 0.0)]),
    ("instrument", [("id21", 2, 19.0, 112.0, 160.0, 3.0), ("id16a", 1, 3.0, 48.0, 96.0, 3.0),
                    (None, 1, 6.0, 24.0, 24.0, 0.0)]),
    ("flavour", [("gpu", 1, 6.0, 96.0, 192.0, 6.0), ("small", 2, 22.0, 88.0, 88.0, 0.0)]),
    ("cloud", [("local", 3, 28.0, 184.0, 280.0, 6.0)]),
])
def test_hours_by_owner_instrument_flavour_cloud(services: Services, clock: FrozenClock, history, by: str,
                                                 expected: list[tuple]) -> None:
    r = report(services, clock, by=by)
    assert [figures(row) for row in r.rows] == expected
    assert figures(r.total) == (None, 3, 28.0, 184.0, 280.0, 6.0)


def test_filters_and_an_open_period(services: Services, clock: FrozenClock, history) -> None:
    # A proposal's share, by owner: what its row says, spread over the owners.
    r = report(services, clock, by="owner", proposal="P1")
    assert [figures(row) for row in r.rows] == [("alice", 1, 16.0, 64.0, 64.0, 0.0), ("sam", 1, 3.0, 48.0, 96.0, 3.0)]
    assert figures(r.total)[1:] == (2, 19.0, 112.0, 160.0, 3.0) and r.filters == {"proposal": "P1"}
    assert figures(report(services, clock, by="flavour", owner="alice", cloud="local").total)[1:] == (
        2, 22.0, 88.0, 88.0, 0.0)
    by_instrument = report(services, clock, by="proposal", instrument="id21")
    assert [figures(row) for row in by_instrument.rows] == [("P1", 2, 19.0, 112.0, 160.0, 3.0)]
    assert report(services, clock, owner="nobody").rows == []
    # Still running: counted up to now (to is never later than now).
    move(services, clock, history["E"], InstanceState.STARTING, at(5, 1))
    clock.set(at(5, 3, 30))
    r = report(services, clock, **{"from": at(5), "to": at(9)}, by="owner")
    assert r.end == at(5, 3, 30) and [figures(row) for row in r.rows] == [("sam", 1, 2.5, 10.0, 10.0, 0.0)]


def test_bad_periods_are_refused_naming_the_field(services: Services, clock: FrozenClock, history) -> None:
    with pytest.raises(InvalidInput) as err:
        report(services, clock, **{"from": at(3), "to": at(2)})
    assert err.value.field == "from"
    with pytest.raises(InvalidInput):
        report(services, clock, **{"from": at(6), "to": None})  # after now


def test_csv_has_the_rows_and_the_total(services: Services, clock: FrozenClock, history) -> None:
    lines = report_csv(report(services, clock, by="proposal")).splitlines()
    assert lines == [
        "proposal,instances,hours,core_hours,memory_gb_hours,gpu_hours",
        "P1,2,19.0,112.0,160.0,3.0", "P2,1,3.0,48.0,96.0,3.0", "(none),1,6.0,24.0,24.0,0.0",
        "(total),3,28.0,184.0,280.0,6.0",
    ]


@pytest.fixture
def app(services: Services, db, clock):
    from visa.web.app import create_app

    application = create_app(services.settings, database=db, clock=clock)
    application.config["TESTING"] = True
    return application


def _login(services: Services, api_client, who: str, password: str):
    from werkzeug.security import generate_password_hash

    with services.database.unit_of_work() as s:
        s.scalar(select(User).where(User.username == who)).password_hash = generate_password_hash(password)
    client = api_client()
    assert client.login(who, password).status_code == 200
    return client


def test_api_page_and_csv(services: Services, clock: FrozenClock, history, api_client) -> None:
    root = _login(services, api_client, "root", "rootpassword")
    alice = _login(services, api_client, "alice", "alice-password")
    period = "from=2026-01-02&to=2026-01-03T00:00:00Z"
    assert alice.get(f"/api/admin/usage/report?{period}").status_code == 403
    assert alice.get("/admin/usage").status_code == 403
    r = root.get(f"/api/admin/usage/report?{period}&by=instrument")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["start"] == "2026-01-02T00:00:00+00:00" and body["by"] == "instrument"
    assert [(row["key"], row["core_hours"]) for row in body["rows"]] == [("id21", 112.0), ("id16a", 48.0), (None, 24.0)]
    assert body["total"]["gpu_hours"] == 6.0
    csv_answer = root.get(f"/api/admin/usage/report.csv?{period}&by=owner&flavour=small")
    assert csv_answer.status_code == 200 and csv_answer.mimetype == "text/csv"
    assert "attachment" in csv_answer.headers["Content-Disposition"]
    assert csv_answer.get_data(as_text=True).splitlines()[1:] == ["alice,2,22.0,88.0,88.0,0.0", "(total),2,22.0,88.0,88.0,0.0"]
    page = root.get(f"/admin/usage?{period}&by=proposal")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "<td>P1</td>" in html and "112.0" in html and "report.csv?" in html
    # Bad input: a 400 naming the field, on the API and on the page.
    for query, field in (("from=2026-01-03&to=2026-01-02", "from"), ("by=colour", "by"), ("from=yesterday", "from")):
        bad = root.get(f"/api/admin/usage/report?{query}")
        assert bad.status_code == 400 and bad.get_json()["field"] == field, (query, bad.get_json())
    bad_page = root.get("/admin/usage?from=2026-01-03&to=2026-01-02")
    assert bad_page.status_code == 400 and "must be before to" in bad_page.get_data(as_text=True)


def test_the_openapi_document_lists_the_report(app) -> None:
    doc = app.test_client().get("/api/openapi.json").get_json()
    params = {p["name"] for p in doc["paths"]["/api/admin/usage/report"]["get"]["parameters"]}
    assert {"from", "to", "by", "owner", "proposal", "instrument", "flavour", "cloud"} <= params
    assert "text/csv" in doc["paths"]["/api/admin/usage/report.csv"]["get"]["responses"]["200"]["content"]


def test_cli_report(cli, history) -> None:
    result = cli("usage", "report", "--from", "2026-01-02", "--to", "2026-01-03", "--by", "proposal")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "from 2026-01-02T00:00:00+00:00 to 2026-01-03T00:00:00+00:00, by proposal"
    assert lines[2].split() == ["P1", "2", "19.0", "112.0", "160.0", "3.0"]
    assert lines[-1].split() == ["(total)", "3", "28.0", "184.0", "280.0", "6.0"]
    as_csv = cli("usage", "report", "--from", "2026-01-02", "--to", "2026-01-03", "--by", "cloud", "--csv")
    assert as_csv.output.splitlines()[1] == "local,3,28.0,184.0,280.0,6.0"
    bad = cli("usage", "report", "--from", "2026-01-03", "--to", "2026-01-02")
    assert bad.exit_code == 1 and "from (2026-01-03" in bad.output and "must be before to" in bad.output
    unknown = cli("usage", "report", "--by", "colour")
    assert unknown.exit_code == 2 and "--by" in unknown.output


def test_a_change_stamped_before_the_period_began_leaves_no_negative_hours(services: Services, world,
                                                                             clock: FrozenClock) -> None:
    clock.set(at(2, 10))
    with services.database.unit_of_work() as s:
        iid = add_instance(s, clock, world).id
    # Another process, its clock a minute behind, stops it.
    move(services, clock, iid, InstanceState.STOPPED, at(2, 9, 59))
    with services.database.sessionmaker() as s:
        periods = s.scalars(select(InstanceStatePeriod).where(InstanceStatePeriod.instance_id == iid)
                            .order_by(InstanceStatePeriod.id)).all()
    assert [(p.state, p.started_at, p.ended_at) for p in periods] == [
        (InstanceState.ACTIVE, at(2, 10), at(2, 10)), (InstanceState.STOPPED, at(2, 9, 59), None)]
    clock.set(at(3))
    assert report(services, clock).total.hours == 0.0
