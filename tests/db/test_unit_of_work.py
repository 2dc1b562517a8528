"""One transaction boundary: a request and ``Database.unit_of_work`` commit, roll back and run
after-commit work the same way (both databases)."""

from __future__ import annotations

import pytest
from flask import Response
from sqlalchemy import func, select

from visa.announcements.models import NotificationKind, NotificationLevel, SystemNotification
from visa.db import Database, after_commit
from visa.web.context import db_session

# What is under test is the real COMMIT and ROLLBACK, not a savepoint standing in for them.
pytestmark = pytest.mark.usefixtures("committed_db")


def _add(s, clock, ran: list[str], label: str) -> None:
    s.add(
        SystemNotification(
            message=label, level=NotificationLevel.INFO, kind=NotificationKind.BANNER, created_at=clock.now()
        )
    )
    s.flush()
    after_commit(s, lambda: ran.append(label))


def _stored(db: Database) -> list[str]:
    with db.sessionmaker() as s:
        return list(s.scalars(select(SystemNotification.message).order_by(SystemNotification.id)))


def _request(app, clock, ran: list[str], label: str, status: int, exc: BaseException | None = None) -> None:
    # The application's own hooks, around a handler's work; no route is needed for that.
    with app.test_request_context("/"):
        _add(db_session(), clock, ran, label)
        if exc is None:
            app.process_response(Response(status=status))
        app.do_teardown_request(exc)


def test_a_request_commits_on_success_and_then_runs_its_after_commit_work(app, db: Database, clock) -> None:
    ran: list[str] = []
    _request(app, clock, ran, "ok", 200)
    assert _stored(db) == ["ok"] and ran == ["ok"]


@pytest.mark.parametrize(("status", "exc"), [(409, None), (500, None), (200, RuntimeError("handler failed"))])
def test_a_failed_request_keeps_nothing_and_runs_nothing(app, db: Database, clock, status, exc) -> None:
    ran: list[str] = []
    _request(app, clock, ran, "refused", status, exc)
    assert _stored(db) == [] and ran == []


def test_unit_of_work_ends_the_same_way(db: Database, clock) -> None:
    ran: list[str] = []
    with db.unit_of_work() as s:
        _add(s, clock, ran, "kept")
    with pytest.raises(RuntimeError), db.unit_of_work() as s:
        _add(s, clock, ran, "dropped")
        raise RuntimeError("a rule refused")
    assert _stored(db) == ["kept"] and ran == ["kept"]
    with db.sessionmaker() as s:
        assert s.scalar(select(func.count(SystemNotification.id))) == 1
