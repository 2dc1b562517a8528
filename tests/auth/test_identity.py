"""Identities: an OIDC login finds its account by issuer and subject, never by name; usernames
are matched whole (both databases)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.factories import make_user
from visa.db import Database
from visa.errors import InvalidInput, Unauthorized
from visa.users.models import User
from visa.users.service import validate_username

ISSUER = "https://sso.example.org/realms/visa"


def _claims(sub: str, name: str, iss: str = ISSUER) -> dict:
    return {"iss": iss, "sub": sub, "preferred_username": name, "name": name.title()}


def test_a_first_login_never_inherits_an_account_of_the_same_name(db: Database, clock) -> None:
    from visa.auth.oidc import user_from_claims

    with db.unit_of_work() as s:
        local = make_user(s, clock, "alice", password="alice-pw")  # local, or imported from the user office
        local_id = local.id
    with db.unit_of_work() as s:
        first = user_from_claims(s, clock, _claims("sub-1", "alice"))
        assert first.id != local_id and first.username == "alice-2"
        assert (first.identity_issuer, first.external_id) == (ISSUER, "sub-1")
        first_id = first.id
    with db.unit_of_work() as s:
        assert user_from_claims(s, clock, _claims("sub-1", "alice")).id == first_id  # found again by identity
        # the same subject at another provider is another identity, and the name is taken twice now
        other = user_from_claims(s, clock, _claims("sub-1", "alice", "https://other.example.org/realms/x"))
        assert other.id not in (local_id, first_id) and other.username == "alice-3"
        # a renamed identity keeps its account: the name in the token does not matter
        assert user_from_claims(s, clock, _claims("sub-1", "bob")).id == first_id
    with db.sessionmaker() as s:
        local = s.get(User, local_id)
        assert local.external_id is None and local.identity_issuer is None


def test_an_administrator_links_an_existing_account_explicitly(db: Database, clock, cli) -> None:
    from visa.auth.oidc import user_from_claims

    with db.unit_of_work() as s:
        local_id = make_user(s, clock, "carol").id
    r = cli("users", "link", "carol", "sub-9", "--issuer", ISSUER)
    assert r.exit_code == 0, r.output
    with db.unit_of_work() as s:
        assert user_from_claims(s, clock, _claims("sub-9", "someone-else")).id == local_id
    r = cli("users", "link", "carol", "sub-10", "--issuer", ISSUER)
    assert r.exit_code != 0 and "already linked" in r.output


@pytest.mark.parametrize("name", ["alice\n", "alice\r\n", "al ice", "Alice", "", "a" * 33, "alice\x00"])
def test_usernames_are_matched_whole(name: str) -> None:
    with pytest.raises(InvalidInput):
        validate_username(name)


def test_a_provider_name_with_a_trailing_newline_is_refused(db: Database, clock) -> None:
    from visa.auth.oidc import user_from_claims

    with db.unit_of_work() as s:
        make_user(s, clock, "alice")
    with db.unit_of_work() as s, pytest.raises(Unauthorized, match="cannot be used"):
        user_from_claims(s, clock, _claims("sub-2", "alice\n"))
    with db.sessionmaker() as s:
        assert [u.username for u in s.scalars(select(User))] == ["alice"]


def test_a_local_login_with_a_trailing_newline_is_not_the_account(app, db: Database, clock, api_client) -> None:
    with db.unit_of_work() as s:
        make_user(s, clock, "alice", password="alice-pw")
    assert api_client().login("alice\n", "alice-pw").status_code == 401
    assert api_client().login("alice", "alice-pw").status_code == 200
