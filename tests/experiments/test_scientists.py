"""Instrument scientists from the user office's export (JSON and CSV), the command line and the
support rule that reads them, on both databases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.factories import actor
from tests.services import add_instance
from visa.actor import SYSTEM
from visa.audit.models import AuditEvent
from visa.db import Database
from visa.experiments.importer import ImportFileError, import_experiments, parse_file
from visa.experiments.models import Experiment, Instrument
from visa.sharing.schemas import SupportQuery
from visa.sharing.support import support_instances
from visa.users.models import Role, User

EXPERIMENTS = [
    {"id": "ev1-id21", "proposal": "ev1", "instrument": "id21", "start_date": "2026-01-05",
     "end_date": "2026-01-08", "members": ["alice"]},
    {"id": "ev2-id16a", "proposal": "ev2", "instrument": "id16a", "start_date": "2026-01-05",
     "end_date": "2026-01-08", "members": ["bob"]},
]


def _import(db: Database, clock, path: Path):
    with db.unit_of_work() as s:
        return import_experiments(SYSTEM, s, clock, parse_file(path))


def _scientists(db: Database) -> dict[str, set[str]]:
    with db.sessionmaker() as s:
        return {i.name: {u.username for u in i.scientists} for i in s.scalars(select(Instrument))}


def _roles(db: Database, clock, username: str) -> set[Role]:
    with db.sessionmaker() as s:
        return s.scalar(select(User).where(User.username == username)).roles_at(clock.now())


def test_json_instruments_set_scientists_exactly(db: Database, clock, tmp_path: Path) -> None:
    f = tmp_path / "export.json"
    f.write_text(json.dumps({"experiments": EXPERIMENTS, "instruments": [
        {"name": "id21", "scientists": [{"username": "carol", "full_name": "Carol C", "email": "carol@example.org"},
                                        "dave"]},
        {"name": "bm18", "scientists": ["erin"]},  # no beamtime yet: the instrument is made
    ]}))
    result = _import(db, clock, f)
    assert sorted(result.scientists_added) == [("bm18", "erin"), ("id21", "carol"), ("id21", "dave")]
    assert sorted(result.roles_granted) == ["carol", "dave", "erin"]
    assert _scientists(db) == {"id21": {"carol", "dave"}, "id16a": set(), "bm18": {"erin"}}
    assert Role.INSTRUMENT_SCIENTIST in _roles(db, clock, "carol")
    with db.sessionmaker() as s:
        assert s.scalar(select(User.email).where(User.username == "carol")) == "carol@example.org"

    # The next export: dave is gone from id21; bm18 is not stated, so it stays as it is.
    f.write_text(json.dumps({"experiments": EXPERIMENTS, "instruments": [{"name": "id21", "scientists": ["carol"]}]}))
    again = _import(db, clock, f)
    assert (again.scientists_added, again.scientists_removed, again.roles_granted) == ([], [("id21", "dave")], [])
    assert _scientists(db) == {"id21": {"carol"}, "id16a": set(), "bm18": {"erin"}}
    assert Role.INSTRUMENT_SCIENTIST in _roles(db, clock, "dave")  # kept: alone it shows no machine

    # An export that says nothing of scientists leaves them all as they are.
    f.write_text(json.dumps(EXPERIMENTS))
    assert _import(db, clock, f).scientists_removed == []
    assert _scientists(db)["id21"] == {"carol"}


def test_csv_column_states_each_rows_instrument(db: Database, clock, tmp_path: Path) -> None:
    f = tmp_path / "export.csv"
    head = "id,proposal,instrument,start_date,end_date,members,instrument_scientists\n"
    f.write_text(head + "ev1-id21,ev1,id21,2026-01-05,2026-01-08,alice,carol\n"
                        "ev3-id21,ev3,id21,2026-02-05,2026-02-08,alice,dave;carol\n"
                        "ev2-id16a,ev2,id16a,2026-01-05,2026-01-08,bob,erin\n")
    _import(db, clock, f)
    assert _scientists(db) == {"id21": {"carol", "dave"}, "id16a": {"erin"}}
    # A blank cell states no scientist for that row: id16a has none now.
    f.write_text(head + "ev1-id21,ev1,id21,2026-01-05,2026-01-08,alice,carol\n"
                        "ev2-id16a,ev2,id16a,2026-01-05,2026-01-08,bob,\n")
    result = _import(db, clock, f)
    assert sorted(result.scientists_removed) == [("id16a", "erin"), ("id21", "dave")]
    assert _scientists(db) == {"id21": {"carol"}, "id16a": set()}


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bad.csv", "id,proposal,instrument,start_date,end_date,instrument_scientists\n"
                    "ev1,ev1,id21,2026-01-05,2026-01-08,carol\n"
                    "ev2,ev2,id21,2026-01-05,2026-01-08,Carol Smith\n",
         "bad.csv: line 3: entry 'ev2': field 'instrument_scientists.0.username'"),
        ("bad.csv", "id,proposal,instrument,start_date,end_date\n"
                    "ev1,ev1,id21,2026-01-05,2026-01-08\n"
                    "\n"
                    "ev2,ev2,id21,2026-01-05,2026-01-08,extra\n",
         "bad.csv: line 4: more cells than columns"),
        ("bad.json", '{"experiments": [],\n "instruments": [\n  {"name": "id21"},\n  {"name": "id21", '
                     '"scientists": ["root!"]}\n]}',
         "bad.json: line 4: instrument 'id21': field 'scientists.0.username'"),
        ("bad.json", '{"experiments": [],\n "instruments": [{"name": "id21"},\n {"name": "id21"}]}',
         "bad.json: line 3: instrument 'id21': field 'name': duplicate instrument (also line 2)"),
        ("bad.json", '{"experiments": [], "instrument": []}', "bad.json: unknown key(s): instrument"),
        ("bad.json", '[\n{"id": "ev1",\n', "bad.json: line 3: not valid JSON"),
    ],
)
def test_a_bad_row_names_its_line_and_field_and_nothing_is_written(
    db: Database, clock, tmp_path: Path, name: str, text: str, expected: str
) -> None:
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(ImportFileError) as caught:
        _import(db, clock, f)
    assert expected in caught.value.message
    with db.sessionmaker() as s:
        assert s.scalar(select(func.count(Instrument.id))) == 0


def test_a_reserved_scientist_refuses_the_whole_export(db: Database, clock, tmp_path: Path) -> None:
    f = tmp_path / "export.json"
    f.write_text(json.dumps({"experiments": EXPERIMENTS, "instruments": [{"name": "id21", "scientists": ["root"]}]}))
    with pytest.raises(ImportFileError, match="'root' is reserved"):
        _import(db, clock, f)
    with db.sessionmaker() as s:
        assert s.scalar(select(func.count(Experiment.id))) == 0


def test_the_support_page_shows_an_imported_scientist_their_instruments_machines(
    db: Database, clock, world: dict[str, int], tmp_path: Path
) -> None:
    f = tmp_path / "export.json"
    f.write_text(json.dumps({"experiments": EXPERIMENTS, "instruments": [{"name": "id21", "scientists": ["carol"]}]}))
    _import(db, clock, f)
    with db.unit_of_work() as s:
        bob = s.scalar(select(User).where(User.username == "bob"))
        world["bob"] = bob.id
        on_id21 = add_instance(s, clock, world, "alice", name="on id21")
        on_id16a = add_instance(s, clock, world, "bob", name="on id16a")
        on_id21.experiments.append(s.scalar(select(Experiment).where(Experiment.external_id == "ev1-id21")))
        on_id16a.experiments.append(s.scalar(select(Experiment).where(Experiment.external_id == "ev2-id16a")))
    with db.sessionmaker() as s:
        carol = s.scalar(select(User).where(User.username == "carol"))
        shown = support_instances(actor(carol, clock), s, clock, SupportQuery())
        assert [i.name for i in shown] == ["on id21"]
    # No longer id21's scientist (an export without her): nothing is shown, though the role stays.
    f.write_text(json.dumps({"experiments": EXPERIMENTS, "instruments": [{"name": "id21", "scientists": []}]}))
    _import(db, clock, f)
    with db.sessionmaker() as s:
        carol = s.scalar(select(User).where(User.username == "carol"))
        assert support_instances(actor(carol, clock), s, clock, SupportQuery()) == []


def test_cli_adds_lists_and_removes_scientists(cli, committed_db: Database, clock, tmp_path: Path) -> None:
    f = tmp_path / "export.json"
    f.write_text(json.dumps(EXPERIMENTS))
    assert cli("experiments", "import", str(f)).exit_code == 0
    assert cli("users", "add", "carol").exit_code == 0
    r = cli("instruments", "scientists", "add", "id21", "carol")
    assert (r.exit_code, r.output) == (0, "id21: carol added\n")
    assert cli("instruments", "scientists", "add", "id21", "carol").output == "id21: carol was a scientist already\n"
    r = cli("instruments", "scientists", "list")
    assert r.output == "id16a: -\nid21: carol\n"
    r = cli("instruments", "scientists", "list", "id21", "--json")
    assert json.loads(r.output) == [{"instrument": "id21", "scientists": ["carol"]}]
    assert Role.INSTRUMENT_SCIENTIST in _roles(committed_db, clock, "carol")

    r = cli("instruments", "scientists", "add", "nope", "carol")
    assert r.exit_code == 1 and "no instrument 'nope'" in r.output
    r = cli("instruments", "scientists", "add", "id21", "nobody")
    assert r.exit_code == 1 and "no user 'nobody'" in r.output

    r = cli("instruments", "scientists", "remove", "id21", "carol")
    assert (r.exit_code, r.output) == (0, "id21: carol removed\n")
    assert _scientists(committed_db)["id21"] == set()
    with committed_db.sessionmaker() as s:
        actions = list(s.scalars(select(AuditEvent.action).where(AuditEvent.action.like("instrument.%"))))
    assert actions == ["instrument.scientist.add", "instrument.scientist.remove"]
