"""Imported people and the identity provider: a person the user office names with their subject
(the provider's ``sub``) finds the imported account, memberships and all, at their first login;
a subject that would hand an account to someone else is refused with the field named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from visa.actor import SYSTEM
from visa.auth.oidc import user_from_claims
from visa.db import Database
from visa.experiments.importer import ImportFileError, import_experiments, parse_file
from visa.experiments.models import Experiment
from visa.users.models import User

ISSUER = "https://aai.example.eu/"
ALICE_SUB = "4f1c2a8e-0000-4000-8000-00000000a11c"


def _export(tmp_path: Path, members: list[Any], scientists: list[Any] | None = None) -> Path:
    f = tmp_path / "export.json"
    f.write_text(json.dumps({
        "experiments": [{"id": "ev280-id21-1", "proposal": "ev280", "instrument": "id21", "start_date": "2026-12-01",
                         "end_date": "2026-12-09", "members": members}],
        **({"instruments": [{"name": "id21", "scientists": scientists}]} if scientists is not None else {}),
    }))
    return f


def _import(db: Database, clock, path: Path) -> Any:
    data = parse_file(path)
    with db.unit_of_work() as s:
        return import_experiments(SYSTEM, s, clock, data)


def _login(db: Database, clock, sub: str, username: str) -> tuple[str, list[str]]:
    claims = {"iss": ISSUER, "sub": sub, "preferred_username": username, "name": username.title()}
    with db.unit_of_work() as s:
        user = user_from_claims(s, clock, claims)
        return user.username, sorted(e.external_id for e in s.scalars(select(Experiment).where(
            Experiment.members.any(User.id == user.id))))


def test_the_first_login_opens_the_imported_account(db: Database, clock, tmp_path: Path) -> None:
    _import(db, clock, _export(tmp_path, [{"username": "alice", "subject": ALICE_SUB}, "bob"],
                               [{"username": "irene", "subject": "irene-sub"}]))
    assert _login(db, clock, ALICE_SUB, "alice") == ("alice", ["ev280-id21-1"])
    assert _login(db, clock, "irene-sub", "irene")[0] == "irene"
    # bob was named without a subject: visa never matches a login by name.
    assert _login(db, clock, "bob-sub", "bob") == ("bob-2", [])
    with db.sessionmaker() as s:
        alice = s.scalar(select(User).where(User.username == "alice"))
        assert (alice.identity_issuer, alice.external_id) == (ISSUER, ALICE_SUB)
    # Imported again (the scheduled run): still one alice, still linked.
    _import(db, clock, _export(tmp_path, [{"username": "alice", "subject": ALICE_SUB}]))
    assert _login(db, clock, ALICE_SUB, "alice") == ("alice", ["ev280-id21-1"])


def test_an_existing_unlinked_account_is_linked_by_the_import(db: Database, clock, tmp_path: Path) -> None:
    _import(db, clock, _export(tmp_path, ["alice"]))
    _import(db, clock, _export(tmp_path, [{"username": "alice", "subject": ALICE_SUB}]))
    assert _login(db, clock, ALICE_SUB, "alice") == ("alice", ["ev280-id21-1"])


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        # one person, two subjects in one file
        (None, [{"username": "alice", "subject": "a"}, {"username": "alice", "subject": "b"}],
         "member alice: field 'subject': a different subject"),
        # one subject, two people in one file
        (None, [{"username": "alice", "subject": "a"}, {"username": "bob", "subject": "a"}],
         "member bob: field 'subject': also alice's"),
        # another account's subject
        ([{"username": "alice", "subject": "a"}], [{"username": "mallory", "subject": "a"}],
         "member mallory: field 'subject': already the identity of alice"),
        # an account already linked to another identity
        ([{"username": "alice", "subject": "a"}], [{"username": "alice", "subject": "b"}],
         "member alice: field 'subject': alice is linked to another identity"),
    ],
)
def test_a_subject_that_would_hand_over_an_account_is_refused(
    db: Database, clock, tmp_path: Path, first: list[Any] | None, second: list[Any], expected: str
) -> None:
    if first is not None:
        _import(db, clock, _export(tmp_path, first))
    with db.sessionmaker() as s:
        before = s.scalar(select(func.count(User.id))), s.scalar(select(func.count(Experiment.id)))
    path = _export(tmp_path, second)
    path.write_text(path.read_text().replace("ev280-id21-1", "ev281-id21-1"))
    with pytest.raises(ImportFileError) as caught:
        _import(db, clock, path)
    assert any(expected in p for p in caught.value.problems), caught.value.problems
    with db.sessionmaker() as s:  # nothing of the refused file was written
        assert (s.scalar(select(func.count(User.id))), s.scalar(select(func.count(Experiment.id)))) == before
