"""Extension requests: asked by the owner, accepted (with a date) or refused by an admin, or
accepted at once by the image's rule; an accepted extension moves the deletion."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from tests.services import Inbox, add_instance
from visa.catalogue.models import AutoAccept, Image
from visa.clock import FrozenClock
from visa.instances import lifecycle
from visa.instances.models import Instance
from visa.services import Services

# The app's requests and its email delivery do not all share the test's one connection (sessions
# met "no such savepoint" on SQLite): the data is committed.
pytestmark = pytest.mark.usefixtures("committed_db")


@pytest.fixture(autouse=True)
def _mail_sent(db):
    """Emails go in background threads after the commit: let them finish before the database
    is emptied for the next test (a TRUNCATE under a sender's open transaction deadlocks)."""
    yield
    for thread in threading.enumerate():
        if thread.name == "visa-mail":
            thread.join(timeout=15)


@pytest.fixture
def app(services: Services, db, clock):
    from visa.web.app import create_app

    application = create_app(services.settings, database=db, clock=clock)
    application.config["TESTING"] = True
    return application


def _busy_instance(services: Services, world, lifetime: timedelta) -> tuple[int, str]:
    with services.database.unit_of_work() as s:
        inst = add_instance(s, services.clock, world, lifetime=lifetime,
                            last_compute_at=services.clock.now() + timedelta(days=90))
        return inst.id, inst.uid


def _login(api_client, who: str):
    from werkzeug.security import generate_password_hash

    from visa.users.models import User

    c = api_client()
    db = c.client.application.extensions["visa"].database
    with db.unit_of_work() as s:
        user = s.scalar(select(User).where(User.username == who))
        user.password_hash = generate_password_hash(f"{who}-password")
    assert c.login(who, f"{who}-password").status_code == 200
    return c


def test_accepted_extension_moves_the_deletion(services: Services, world, clock: FrozenClock, inbox: Inbox,
                                               api_client) -> None:
    start = clock.now()
    iid, uid = _busy_instance(services, world, timedelta(days=3))
    alice, root = _login(api_client, "alice"), _login(api_client, "root")

    # Warned 48 h before the end.
    clock.advance(days=1)
    assert lifecycle.run(services).lifetime_warned == [iid]

    r = alice.post(f"/api/instances/{uid}/extensions",
                   json={"requested_until": (start + timedelta(days=10)).isoformat(), "comment": "scans until Friday"})
    assert r.status_code == 201, r.get_json()
    req = r.get_json()
    assert req["state"] == "PENDING"
    # One at a time; owners cannot handle them.
    assert alice.post(f"/api/instances/{uid}/extensions",
                      json={"requested_until": (start + timedelta(days=9)).isoformat()}).status_code == 409
    assert alice.get("/api/extensions").status_code == 403
    assert alice.post(f"/api/extensions/{req['id']}/accept", json={}).status_code == 403

    listed = root.get("/api/extensions").get_json()
    assert [x["id"] for x in listed] == [req["id"]] and listed[0]["instance"]["uid"] == uid
    granted = start + timedelta(days=7)
    r = root.post(f"/api/extensions/{req['id']}/accept", json={"granted_until": granted.isoformat(), "response": "ok"})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["state"] == "ACCEPTED"
    assert root.post(f"/api/extensions/{req['id']}/refuse", json={}).status_code == 409

    with services.database.sessionmaker() as s:
        inst = s.get(Instance, iid)
        assert inst.terminates_at == granted and inst.lifetime_warned_at is None
    accepted = [m for m in inbox.wait_for(3) if m["X-Visa-Event"].startswith("extension_handled")]
    assert len(accepted) == 1 and "accepted" in accepted[0]["Subject"]
    assert accepted[0]["To"] == "alice@example.org"

    # Not deleted at the old date; warned again 48 h before the new one, deleted then.
    events = {}
    while clock.now() < start + timedelta(days=8):
        clock.advance(hours=1)
        r = lifecycle.run(services)
        for _i in r.lifetime_warned:
            events.setdefault("warned", clock.now())
        for _i in r.deleted:
            events.setdefault("deleted", clock.now())
    assert events == {"warned": granted - timedelta(hours=48), "deleted": granted}
    # first warning, the administrator's, accepted, second warning, deleted
    assert len(inbox.wait_for(5)) == 5


def test_refused_extension(services: Services, world, clock: FrozenClock, inbox: Inbox, api_client) -> None:
    _, uid = _busy_instance(services, world, timedelta(days=3))
    alice, root = _login(api_client, "alice"), _login(api_client, "root")
    req = alice.post(f"/api/instances/{uid}/extensions",
                     json={"requested_until": (clock.now() + timedelta(days=5)).isoformat()}).get_json()
    r = root.post(f"/api/extensions/{req['id']}/refuse", json={"response": "the cluster is full"})
    assert r.get_json()["state"] == "REFUSED"
    assert root.get("/api/extensions").get_json() == []
    inbox.wait_for(2)
    msg = inbox.of_kind("extension_handled")[0]
    assert "refused" in msg["Subject"] and "the cluster is full" in msg.get_body(("plain",)).get_content()


def test_administrators_are_told_and_a_decision_is_final(services: Services, world, clock: FrozenClock,
                                                         inbox: Inbox, api_client) -> None:
    from tests.factories import make_user
    from visa.instances.models import ExtensionRequest
    from visa.users.models import Role

    with services.database.unit_of_work() as s:
        make_user(s, clock, "ops", roles=(Role.ADMIN,), email="ops@example.org")
        make_user(s, clock, "gone", roles=(Role.ADMIN,), email="gone@example.org").active = False
    iid, uid = _busy_instance(services, world, timedelta(days=3))
    alice, root = _login(api_client, "alice"), _login(api_client, "root")
    until = clock.now() + timedelta(days=6)
    req = alice.post(f"/api/instances/{uid}/extensions",
                     json={"requested_until": until.isoformat(), "comment": "beamtime moved"}).get_json()
    inbox.wait_for(2)
    asked = inbox.of_kind("extension_requested")
    # Every active administrator, once each; the owner is not among them.
    assert sorted(m["To"] for m in asked) == ["ops@example.org", "root@example.org"]
    body = asked[0].get_body(("plain",)).get_content()
    assert "alice" in body and "beamtime moved" in body and "/admin/extensions" in body

    assert root.post(f"/api/extensions/{req['id']}/refuse", json={"response": "no"}).status_code == 200
    with services.database.sessionmaker() as s:
        before = s.get(ExtensionRequest, req["id"])
        state, handled = before.state, before.handled_at
        ends = s.get(Instance, iid).terminates_at
    # Decided twice: 409 with a JSON reason, and nothing moves (state, date, no second email).
    for decision in ("accept", "refuse"):
        r = root.post(f"/api/extensions/{req['id']}/{decision}", json={"granted_until": until.isoformat()})
        assert r.status_code == 409 and "already been refused" in r.get_json()["message"]
    with services.database.sessionmaker() as s:
        after = s.get(ExtensionRequest, req["id"])
        assert (after.state, after.handled_at) == (state, handled)
        assert s.get(Instance, iid).terminates_at == ends
    inbox.wait_for(4, timeout=1)
    assert len(inbox.of_kind("extension_handled")) == 1
    # An unknown request: 404, not 500.
    assert root.post("/api/extensions/999999/accept", json={}).status_code == 404


@pytest.mark.parametrize(("rule", "owner", "auto"), [
    (AutoAccept.ALL, "alice", True), (AutoAccept.STAFF, "alice", False), (AutoAccept.STAFF, "sam", True),
    (AutoAccept.NONE, "sam", False),
])
def test_auto_accept_rules(services: Services, world, clock: FrozenClock, inbox: Inbox, api_client,
                           rule: AutoAccept, owner: str, auto: bool) -> None:
    with services.database.unit_of_work() as s:
        s.execute(update(Image).values(autoaccept_extension=rule))
        inst = add_instance(s, clock, world, owner, lifetime=timedelta(days=2))
        uid = inst.uid
    client = _login(api_client, owner)
    until = clock.now() + timedelta(days=5)
    r = client.post(f"/api/instances/{uid}/extensions", json={"requested_until": until.isoformat()})
    assert r.status_code == 201
    assert r.get_json()["state"] == ("ACCEPTED" if auto else "PENDING")
    assert r.get_json()["instance"]["terminates_at"] == (until if auto else clock.now() + timedelta(days=2)).isoformat()
    # Beyond one maximum lifetime from now, an admin decides, whatever the rule.
    if auto:
        far = clock.now() + timedelta(days=400)
        r = client.post(f"/api/instances/{uid}/extensions", json={"requested_until": far.isoformat()})
        assert r.get_json()["state"] == "PENDING"
