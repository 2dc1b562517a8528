"""A login does the same work whoever the username names: an attacker timing the answers
learns nothing of which accounts exist, nor which have a local password."""

from __future__ import annotations

import time

import pytest
from werkzeug.security import check_password_hash

from tests.auth.test_web_safety import _form_login
from tests.auth.world import PASSWORD, seed
from tests.factories import make_user


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password hash checked (its method)."""
    import visa.users.service

    seen: list[str] = []

    def counted(pwhash: str, password: str) -> bool:
        seen.append(pwhash.split("$", 1)[0])
        return check_password_hash(pwhash, password)

    monkeypatch.setattr(visa.users.service, "check_password_hash", counted)
    return seen


def test_unknown_user_costs_a_hash_like_a_wrong_password(db, clock, app, verifications) -> None:
    seed(db, clock)
    with db.unit_of_work() as s:
        make_user(s, clock, "sso-only", password=None)  # logs in through the identity provider only
        make_user(s, clock, "gone", password=PASSWORD).active = False
    for username in ("owner", "nobody-here", "sso-only", "gone"):
        verifications.clear()
        r = _form_login(app.test_client(), username, "wrong-password")
        assert r.status_code == 401, username
        assert len(verifications) == 1, (username, verifications)
    # An inactive account with the right password is refused, after the same work.
    verifications.clear()
    assert _form_login(app.test_client(), "gone", PASSWORD).status_code == 401 and len(verifications) == 1


def test_unknown_and_known_usernames_take_alike(db, clock, app) -> None:
    seed(db, clock)

    def took(username: str) -> float:
        best = float("inf")
        for _ in range(3):  # the fastest of a few: scheduling noise only ever adds
            c = app.test_client()
            start = time.perf_counter()
            assert _form_login(c, username, "wrong-password").status_code in (401, 429)
            best = min(best, time.perf_counter() - start)
        return best

    app.extensions.pop("visa_auth_limits", None)
    known, unknown = took("owner"), took("nobody-here")
    # A password hash costs tens of milliseconds; the lookup alone a fraction of one.
    assert 0.2 < unknown / known < 5, (known, unknown)
