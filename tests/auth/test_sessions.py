"""Login sessions live on the server: logout, a password change, deactivation and an
administrator's revocation end them everywhere, copies of the cookie included (both databases)."""

from __future__ import annotations

from sqlalchemy import func, select

from tests.factories import make_user
from visa.actor import SYSTEM
from visa.auth import sessions
from visa.db import Database
from visa.users import service as users
from visa.users.models import LoginSession, Role


def _people(db: Database, clock) -> None:
    with db.unit_of_work() as s:
        make_user(s, clock, "alice", password="alice-pw")
        make_user(s, clock, "root", password="root-pw", roles=(Role.ADMIN,))


def _thief(app, victim) -> object:
    """Another browser holding a copy of the victim's session cookie."""
    thief = app.test_client()
    thief.set_cookie("visa_session", victim.client.get_cookie("visa_session").value)
    return thief


def test_a_copied_cookie_stops_working_after_logout(app, db: Database, clock, api_client) -> None:
    _people(db, clock)
    alice, laptop = api_client(), api_client()
    assert alice.login("alice", "alice-pw").status_code == 200
    assert laptop.login("alice", "alice-pw").status_code == 200
    thief = _thief(app, alice)
    assert thief.get("/api/me").status_code == 200
    assert alice.post("/api/logout").status_code == 200
    assert alice.get("/api/me").status_code == 401
    assert thief.get("/api/me").status_code == 401  # the server forgot the session, not just the browser
    assert laptop.get("/api/me").status_code == 200  # another login of hers is another session

    # The logout page's form does the same.
    thief = _thief(app, laptop)
    r = laptop.client.post("/logout", data={"csrf_token": laptop.csrf})
    assert r.status_code == 303
    assert thief.get("/api/me").status_code == 401 and thief.get("/").status_code in (302, 303)
    with db.sessionmaker() as s:
        assert s.scalar(select(func.count()).select_from(LoginSession)) == 0
        assert all(not row.refresh_token for row in s.scalars(select(LoginSession)))


def test_a_new_login_in_the_same_browser_replaces_its_session(app, db: Database, clock, api_client) -> None:
    _people(db, clock)
    alice = api_client()
    assert alice.login("alice", "alice-pw").status_code == 200
    before = _thief(app, alice)
    assert alice.login("alice", "alice-pw").status_code == 200
    assert before.get("/api/me").status_code == 401  # a cookie planted before login (fixation) opens nothing
    assert alice.get("/api/me").status_code == 200


def test_password_change_deactivation_and_revocation_end_every_session(app, db: Database, clock, api_client) -> None:
    _people(db, clock)
    root = api_client()
    assert root.login("root", "root-pw").status_code == 200

    def logged_in_twice() -> tuple:
        a, b = api_client(), api_client()
        assert a.login("alice", "alice-pw").status_code == 200 and b.login("alice", "alice-pw").status_code == 200
        return a, b, _thief(app, a)

    # an administrator logs alice out everywhere
    a, b, thief = logged_in_twice()
    r = root.delete("/api/admin/users/alice/sessions")
    assert r.status_code == 200, r.get_json()
    assert [c.get("/api/me").status_code for c in (a, b, thief)] == [401, 401, 401]

    # a password change
    a, b, thief = logged_in_twice()
    with db.unit_of_work() as s:
        users.set_password(SYSTEM, s, clock, users.get_user(s, "alice"), "alice-pw")  # even to the same one
    assert [c.get("/api/me").status_code for c in (a, b, thief)] == [401, 401, 401]

    # deactivation; reactivated, she logs in again, and the old cookies stay dead
    a, b, thief = logged_in_twice()
    assert root.put("/api/admin/users/alice/active", json={"active": False}).get_json()["active"] is False
    assert [c.get("/api/me").status_code for c in (a, b, thief)] == [401, 401, 401]
    assert api_client().login("alice", "alice-pw").status_code == 401
    assert root.put("/api/admin/users/alice/active", json={"active": True}).status_code == 200
    assert [c.get("/api/me").status_code for c in (a, b, thief)] == [401, 401, 401]
    assert api_client().login("alice", "alice-pw").status_code == 200

    assert root.put("/api/admin/users/alice/active", json={"active": "no"}).status_code == 400
    assert root.put("/api/admin/users/root/active", json={"active": False}).status_code == 409  # not oneself
    assert root.get("/api/me").status_code == 200


def test_the_event_stream_checks_the_server_session(app, db: Database, clock, api_client) -> None:
    from types import SimpleNamespace

    from visa.web import events

    _people(db, clock)
    alice = api_client()
    assert alice.login("alice", "alice-pw").status_code == 200
    stream = events.EventStream(app)
    request = SimpleNamespace(cookies={"visa_session": alice.client.get_cookie("visa_session").value})
    ident = stream.identify(request)
    assert ident is not None and stream.stream(*ident).session_valid()
    assert alice.post("/api/logout").status_code == 200
    assert not stream.stream(*ident).session_valid()


def test_a_session_ends_after_its_lifetime_and_is_purged(app, db: Database, clock, api_client, monkeypatch) -> None:
    from datetime import UTC, datetime, timedelta

    _people(db, clock)
    alice = api_client()
    assert alice.login("alice", "alice-pw").status_code == 200
    later = datetime.now(UTC) + sessions.SESSION_LIFETIME + timedelta(minutes=1)
    monkeypatch.setattr(sessions, "_wall", lambda: later)
    assert alice.get("/api/me").status_code == 401
    with db.unit_of_work() as s:
        assert sessions.purge_expired_sessions(s) == 1


def test_the_cli_ends_sessions_and_deactivates(app, db: Database, clock, api_client, cli) -> None:
    _people(db, clock)
    alice = api_client()
    assert alice.login("alice", "alice-pw").status_code == 200
    r = cli("users", "logout", "alice")
    assert r.exit_code == 0 and "1 session(s) ended" in r.output
    assert alice.get("/api/me").status_code == 401
    assert alice.login("alice", "alice-pw").status_code == 200
    assert cli("users", "deactivate", "alice").exit_code == 0
    assert alice.get("/api/me").status_code == 401 and alice.login("alice", "alice-pw").status_code == 401
    assert cli("users", "activate", "alice").exit_code == 0
    assert alice.login("alice", "alice-pw").status_code == 200
    r = cli("users", "logout", "nobody")
    assert r.exit_code == 1 and "nobody" in r.output
