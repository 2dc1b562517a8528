"""The user office import: JSON and CSV, idempotent, all-or-nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from visa.actor import SYSTEM
from visa.db import Database
from visa.experiments.importer import ImportFileError, import_experiments, parse_file
from visa.experiments.models import Experiment, Instrument, Proposal
from visa.users.models import User

RECORDS = [
    {"id": "ev280-id21-1", "proposal": "ev280", "proposal_title": "Speciation of arsenic", "instrument": "id21",
     "start_date": "2026-10-01", "end_date": "2026-10-04", "members": ["alice", {"username": "bob", "email": "bob@example.org"}]},
    {"id": "ma6012-id16a-1", "proposal": "ma6012", "instrument": "id16a", "start_date": "2026-11-02",
     "end_date": "2026-11-05", "public_at": "2029-11-05T00:00:00Z", "members": ["alice"]},
]


def _run(db: Database, clock, path: Path):
    specs = parse_file(path)
    with db.unit_of_work() as s:
        return import_experiments(SYSTEM, s, clock, specs)


def test_json_import_is_idempotent(db: Database, clock, tmp_path: Path) -> None:
    f = tmp_path / "exp.json"
    f.write_text(json.dumps({"experiments": RECORDS}))
    first = _run(db, clock, f)
    assert (first.created, first.users_created) == (2, 2)
    second = _run(db, clock, f)
    assert (second.created, second.updated, second.unchanged, second.users_created) == (0, 0, 2, 0)
    with db.sessionmaker() as s:
        assert s.scalar(select(func.count(Instrument.id))) == 2
        exp = s.scalar(select(Experiment).where(Experiment.external_id == "ev280-id21-1"))
        assert {u.username for u in exp.members} == {"alice", "bob"}
        assert s.scalar(select(User.email).where(User.username == "bob")) == "bob@example.org"
        assert s.scalar(select(Proposal).where(Proposal.identifier == "ma6012")).public_at.year == 2029


def test_csv_import_and_member_change(db: Database, clock, tmp_path: Path) -> None:
    f = tmp_path / "exp.csv"
    f.write_text("id,proposal,instrument,start_date,end_date,members\nev1-id21,ev1,id21,2026-01-01,2026-01-03,alice;bob\n")
    assert _run(db, clock, f).created == 1
    f.write_text("id,proposal,instrument,start_date,end_date,members\nev1-id21,ev1,id21,2026-01-01,2026-01-03,alice\n")
    assert _run(db, clock, f).updated == 1
    with db.sessionmaker() as s:
        exp = s.scalar(select(Experiment))
        assert [u.username for u in exp.members] == ["alice"]


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"start_date": "yesterday"}, "field 'start_date'"),
        ({"proposal": "../etc"}, "field 'proposal'"),
        ({"members": ["Robert'); DROP TABLE"]}, "field 'members.0.username'"),
        ({"end_date": "2026-09-01"}, "end_date is before start_date"),
        ({"title": "x" * 5000}, "field 'title'"),
        ({"instrument": None}, "field 'instrument'"),
        ({"doi": "11.1234/x"}, "field 'doi': Value error, not a DOI"),
        ({"doi": "10.1234/a b"}, "field 'doi'"),
        ({"data_url": "javascript:alert(1)"}, "field 'data_url': Value error, must be an http"),
        ({"data_url": "//evil.example/x"}, "field 'data_url'"),
        ({"logbook_url": "https://evil.example/\nx"}, "field 'logbook_url'"),
        ({"logbook_url": "https://user:pw@logbook.example.org/"}, "field 'logbook_url'"),
        ({"logbook_url": "ftp://logbook.example.org/"}, "field 'logbook_url'"),
    ],
)
def test_bad_record_refuses_the_whole_file(db: Database, clock, tmp_path: Path, record: dict, expected: str) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(RECORDS[:1]))
    _run(db, clock, good)
    bad = tmp_path / "bad.json"
    broken = {**RECORDS[0], **record, "id": "ev999-id21"}
    bad.write_text(f"[\n  {json.dumps(RECORDS[1])},\n  {json.dumps(broken)}\n]\n")
    with pytest.raises(ImportFileError) as err:
        parse_file(bad)
    assert "bad.json: line 3: entry 'ev999-id21'" in err.value.message
    assert expected in err.value.message
    with db.sessionmaker() as s:
        assert s.scalar(select(func.count(Experiment.id))) == 1


def test_duplicate_id_and_not_a_list(tmp_path: Path) -> None:
    f = tmp_path / "dup.json"
    f.write_text(json.dumps([RECORDS[0], RECORDS[0]]))
    with pytest.raises(ImportFileError, match="duplicate experiment id"):
        parse_file(f)
    f.write_text('{"nope": 1}')
    with pytest.raises(ImportFileError, match="expected a list"):
        parse_file(f)
    c = tmp_path / "x.csv"
    c.write_text("id,proposal\n1,2\n")
    with pytest.raises(ImportFileError, match="missing CSV column"):
        parse_file(c)


def test_links_to_the_data_are_imported_and_updated(db: Database, clock, tmp_path: Path) -> None:
    f = tmp_path / "exp.csv"
    f.write_text("id,proposal,instrument,start_date,end_date,doi,data_url,logbook_url\n"
                 "ev1-id21,ev1,id21,2026-01-01,2026-01-03,https://doi.org/10.15151/ESRF-ES-1,"
                 "https://data.example.org/ev1,\n")
    assert _run(db, clock, f).created == 1
    with db.sessionmaker() as s:
        exp = s.scalar(select(Experiment))
        assert (exp.doi, exp.data_url, exp.logbook_url) == ("10.15151/ESRF-ES-1", "https://data.example.org/ev1", None)
        assert exp.doi_url == "https://doi.org/10.15151/ESRF-ES-1"
    f = tmp_path / "exp.json"
    f.write_text(json.dumps([{"id": "ev1-id21", "proposal": "ev1", "instrument": "id21", "start_date": "2026-01-01",
                              "end_date": "2026-01-03", "doi": "doi:10.5072/a<b>\"c#d",
                              "logbook_url": "HTTPS://logbook.example.org/ev1?a=1&b=2"}]))
    result = _run(db, clock, f)
    assert result.experiments_updated == [("ev1-id21", ["doi", "data_url", "logbook_url"])]
    with db.sessionmaker() as s:
        exp = s.scalar(select(Experiment))
        assert exp.doi == '10.5072/a<b>"c#d'
        # Every character a link's address could misread is escaped in the resolver's URL.
        assert exp.doi_url == "https://doi.org/10.5072/a%3Cb%3E%22c%23d"
        assert exp.logbook_url == "HTTPS://logbook.example.org/ev1?a=1&b=2"
