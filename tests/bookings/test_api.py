"""GPU bookings over the REST API and the page, on SQLite and PostgreSQL: bad input is a 4xx naming
the field, an over-booking a 409 naming the full day; who may decide; /api/capacity says "next
free on" for the others and "booked for you" for the holder, whose create then succeeds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.bookings.conftest import TODAY, GpuCloud, mail_sent
from visa.clock import FrozenClock
from visa.db import Database
from visa.settings import Settings

pytestmark = pytest.mark.usefixtures("committed_db")  # requests and emails use connections of their own
TOMORROW = TODAY + timedelta(days=1)


@pytest.fixture
def app(sched_settings: Settings, db: Database, clock: FrozenClock, gpus: GpuCloud, host: Any) -> Any:
    from visa.web.app import create_app

    application = create_app(sched_settings, database=db, clock=clock)
    application.config["TESTING"] = True
    application.extensions["visa"].set_provider("gpu", gpus)
    return application


def _client(api_client: Any, who: str) -> Any:
    c = api_client()
    assert c.login(who, f"{who}-password").status_code == 200
    return c


def _book(c: Any, experiment: int, **fields: Any) -> Any:
    body = {"flavour": "esrf.gpu.a40", "starts_on": TOMORROW.isoformat(), "ends_on": TOMORROW.isoformat(),
            "experiment_id": experiment, **fields}
    r = c.post("/api/bookings", json=body)
    mail_sent()
    return r


def test_bad_input_is_a_4xx_naming_the_field(app: Any, api_client: Any, world: dict[str, Any]) -> None:
    carol = _client(api_client, "carol")
    for fields, field in (({"count": 0}, "count"), ({"starts_on": "tomorrow"}, "starts_on"),
                          ({"starts_on": None}, "starts_on"), ({"colour": "red"}, "colour"),
                          ({"experiment_id": 2**40}, "experiment_id"), ({"flavour": ""}, "flavour"),
                          ({"ends_on": (TODAY - timedelta(days=1)).isoformat()}, "ends_on")):
        r = _book(carol, world["beam"], **fields)
        assert r.status_code == 400 and r.get_json()["field"] == field, (fields, r.get_json())
    r = carol.post("/api/bookings", data="not json", headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500
    assert carol.get("/api/bookings?scope=everything").get_json()["field"] == "scope"
    assert carol.get("/api/bookings/999").status_code == 404
    assert carol.get("/api/bookings").get_json() == []


def test_ask_decide_and_use_over_http(app: Any, api_client: Any, world: dict[str, Any], gpus: GpuCloud,
                                      inbox: Any) -> None:
    alice, bob, carol = (_client(api_client, n) for n in ("alice", "bob", "carol"))
    dave, sid, ada = (_client(api_client, n) for n in ("dave", "sid", "ada"))
    plan = world["gpu_plan"]
    for n in range(2):  # two GPUs held by running machines, for a week
        r = alice.post("/api/instances", json={"name": f"run {n}", "plan_id": plan, "experiment_ids": [world["bob_beam"]]})
        assert r.status_code == 201, r.get_json()
    gpus.used = 2
    bob_booking = _book(bob, world["bob_beam"]).get_json()
    assert ada.post(f"/api/bookings/{bob_booking['id']}/accept", json={}).get_json()["state"] == "ACCEPTED"

    # Two more for tomorrow: refused, naming the day.
    r = _book(carol, world["beam"], count=2)
    assert r.status_code == 409, r.get_json()
    body = r.get_json()
    assert body["error"] == "no_capacity" and body["field"] == "starts_on"
    assert body["details"]["day"] == TOMORROW.isoformat() and TOMORROW.isoformat() in body["message"]

    r = _book(carol, world["beam"], starts_on=TODAY.isoformat(), comment="tomography")
    assert r.status_code == 201, r.get_json()
    booking = r.get_json()
    assert booking["state"] == "PENDING" and booking["instrument"] == ["id16a"] and booking["user"] == "carol"
    assert carol.post(f"/api/bookings/{booking['id']}/accept", json={}).status_code == 403
    r = sid.post(f"/api/bookings/{booking['id']}/refuse", json={})
    assert r.status_code == 400 and r.get_json()["field"] == "response"
    assert [b["id"] for b in sid.get("/api/bookings?scope=decide").get_json()] == [booking["id"], bob_booking["id"]]
    page = sid.get("/bookings")
    assert page.status_code == 200 and f'data-testid="accept-{booking["id"]}"'.encode() in page.data
    r = sid.post(f"/api/bookings/{booking['id']}/accept", json={"response": "enjoy"})
    mail_sent()
    assert r.status_code == 200 and r.get_json()["state"] == "ACCEPTED" and r.get_json()["handled_by"] == "sid"
    again = sid.post(f"/api/bookings/{booking['id']}/accept", json={})
    assert again.status_code == 409 and "already been accepted" in again.get_json()["message"]

    # The create page's figures: full for dave (with the next free day), booked for carol.
    day_after = (TODAY + timedelta(days=2)).isoformat()
    row = dave.get("/api/capacity?flavour=esrf.gpu.a40").get_json()[0]
    assert row["available"] is False and row["next_free"] == day_after and f"next free on {day_after}" in row["message"]
    assert row["booked_until"] is None
    row = carol.get("/api/capacity?flavour=esrf.gpu.a40").get_json()[0]
    assert row["available"] is True and row["message"] == f"booked for you until {TOMORROW.isoformat()}"
    assert row["booked_until"] == TOMORROW.isoformat()
    r = dave.post("/api/instances", json={"name": "mine", "plan_id": plan, "experiment_ids": [world["beam"]]})
    assert r.status_code == 409 and r.get_json()["error"] == "no_capacity" and TOMORROW.isoformat() in r.get_json()["message"]
    r = carol.post("/api/instances", json={"name": "tomo", "plan_id": plan, "experiment_ids": [world["beam"]]})
    assert r.status_code == 201, r.get_json()
    end = datetime.combine(TOMORROW + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    assert datetime.fromisoformat(r.get_json()["terminates_at"]) == end
    assert carol.get(f"/api/bookings/{booking['id']}").get_json()["instances"] == [r.get_json()["uid"]]
    # Its page names the booking and the end they share; a machine of no booking names none.
    page = carol.get(f"/instances/{r.get_json()['uid']}").get_data(as_text=True)
    shown = page.split('data-testid="booking">', 1)[1].split("</dd>", 1)[0]
    assert f'<a href="/bookings">booking {booking["id"]}</a>' in shown, shown
    assert f"{TODAY.isoformat()} to {TOMORROW.isoformat()}" in shown and f"{end:%Y-%m-%d %H:%M} UTC" in shown
    uid = alice.get("/api/instances").get_json()[0]["uid"]
    assert 'data-testid="booking"' not in alice.get(f"/instances/{uid}").get_data(as_text=True)
    assert dave.get(f"/api/bookings/{booking['id']}").status_code == 404  # others' bookings stay unseen
    assert {m["To"] for m in inbox.wait_for(6)} >= {"carol@example.org", "bob@example.org", "sid@example.org"}
