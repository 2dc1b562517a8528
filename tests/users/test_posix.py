"""Users' unix identities on both databases: the command line, the admin API and the import set
them, each change audited; a uid another account has, one below the system range and a source
that comes after the one that set it are refused with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.admin.world import bearer, build
from tests.factories import make_user
from visa.actor import SYSTEM
from visa.audit.models import AuditEvent
from visa.db import Database
from visa.experiments.importer import ImportFileError, import_experiments, parse_file
from visa.settings import PosixSettings
from visa.users import service
from visa.users.models import User


def _user(db: Database, name: str) -> User:
    with db.sessionmaker() as s:
        user = s.scalar(select(User).where(User.username == name))
        assert user is not None
        s.expunge(user)
        return user


def _posix_events(db: Database, user_id: int) -> list[AuditEvent]:
    with db.sessionmaker() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == "user.posix",
                                                       AuditEvent.target_id == str(user_id))))


def test_set_posix_on_the_command_line_is_checked_and_audited(cli, db: Database, clock) -> None:
    assert cli("init").exit_code == 0
    assert cli("users", "add", "dora").exit_code == 0
    assert cli("users", "add", "eve").exit_code == 0
    r = cli("users", "set-posix", "dora", "--uid", "23456", "--gid", "23400", "--groups", "24001,24002",
            "--home", "/home/dora")
    assert r.exit_code == 0, r.output
    dora = _user(db, "dora")
    assert (dora.uid_number, dora.gid_number, dora.extra_gids, dora.home_path, dora.posix_source) == (
        23456, 23400, [24001, 24002], "/home/dora", "cli")
    (event,) = _posix_events(db, dora.id)
    assert event.details["new"]["uid_number"] == 23456 and event.details["old"]["uid_number"] is None
    assert "uid=23456" in cli("users", "list").output

    # The same again changes nothing and writes no second audit row.
    assert "unchanged" in cli("users", "set-posix", "dora", "--uid", "23456").output
    assert len(_posix_events(db, dora.id)) == 1

    r = cli("users", "set-posix", "eve", "--uid", "23456", "--gid", "23456")
    assert r.exit_code == 1 and "uid 23456 is already dora's" in r.output
    r = cli("users", "set-posix", "eve", "--uid", "999", "--gid", "2000")
    assert r.exit_code == 1 and "uid_number 999 is below 1000" in r.output
    r = cli("users", "set-posix", "eve", "--uid", "3000", "--gid", "3000", "--groups", "27")
    assert r.exit_code == 1 and "extra_gids 27 is below 1000" in r.output  # e.g. the sudo group
    r = cli("users", "set-posix", "eve", "--uid", "3000", "--home", "/home/../etc")
    assert r.exit_code == 1 and "home_path" in r.output
    r = cli("users", "set-posix", "eve", "--groups", "a,b")
    assert r.exit_code == 2 and "--groups" in r.output
    eve = _user(db, "eve")
    assert (eve.uid_number, eve.gid_number, eve.extra_gids, eve.home_path) == (None, None, [], None)
    assert _posix_events(db, eve.id) == []


def test_the_uid_is_unique_in_the_database_itself(db: Database, clock) -> None:
    from sqlalchemy.exc import IntegrityError

    with db.sessionmaker() as s:
        make_user(s, clock, "u-one", uid_number=41000)
        with pytest.raises(IntegrityError):
            make_user(s, clock, "u-two", uid_number=41000)
        s.rollback()


@pytest.fixture
def world(db, clock):
    return build(db, clock)


def test_the_admin_api_sets_the_identity_and_names_what_is_wrong(app, world, db: Database) -> None:
    client, h = app.test_client(), bearer(world.admin_token)
    url = "/api/admin/users/alice/posix"
    r = client.put(url, json={"uid_number": 23456, "gid_number": 23456, "extra_gids": [24001],
                              "home_path": "/home/alice"}, headers=h)
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert (body["uid_number"], body["extra_gids"], body["posix_source"]) == (23456, [24001], "admin")
    before = _user(db, "bob")
    cases = [
        ({"uid_number": 23456, "gid_number": 5000}, 409, "uid_number", "already alice's"),
        ({"uid_number": 500, "gid_number": 5000}, 400, "uid_number", "below 1000"),
        ({"uid_number": 5000, "gid_number": 5000, "extra_gids": [0]}, 400, "extra_gids", "below 1000"),
        ({"uid_number": 5000, "home_path": "home/bob"}, 400, "home_path", "absolute"),
        ({"uid_number": 5000, "home_path": "/home/bob/../../etc"}, 400, "home_path", "normalised"),
        ({"uid_number": "x"}, 400, "uid_number", ""),
        ({"uid_number": 2**40}, 400, "uid_number", ""),
        ({"shell": "/bin/sh"}, 400, "shell", ""),
    ]
    for payload, status, field, words in cases:
        r = client.put("/api/admin/users/bob/posix", json=payload, headers=h)
        assert r.status_code == status and r.is_json, (payload, r.get_json())
        err = r.get_json()
        assert field in (err.get("field") or json.dumps(err)) and words in err["message"], (payload, err)
    after = _user(db, "bob")
    assert (after.uid_number, after.gid_number, after.home_path) == (before.uid_number, before.gid_number,
                                                                    before.home_path)
    r = client.put(url, json={"uid_number": 23456}, headers=bearer(world.user_token))
    assert r.status_code == 403


def test_an_identity_from_the_provider_is_not_overridden_by_later_sources(db: Database, clock, tmp_path: Path) -> None:
    limits = PosixSettings(sources=["oidc", "import", "cli", "admin"])
    with db.unit_of_work() as s:
        user = make_user(s, clock, "olga", uid_number=None, gid_number=None)
        service.set_posix(SYSTEM, s, clock, user, service.Posix(30001, 30001), source="oidc", limits=limits)
    with db.unit_of_work() as s, pytest.raises(Exception, match="comes from the identity provider"):
        service.set_posix(SYSTEM, s, clock, service.get_user(s, "olga"), service.Posix(30002, 30002),
                          source="admin", limits=limits)
    f = tmp_path / "exp.json"
    f.write_text(json.dumps([{"id": "e1", "proposal": "p1", "instrument": "id21", "start_date": "2026-01-01",
                              "end_date": "2026-01-02",
                              "members": [{"username": "olga", "uid_number": 30003, "gid_number": 30003}]}]))
    with db.unit_of_work() as s:
        result = import_experiments(SYSTEM, s, clock, parse_file(f))
    assert result.identities_set == 0 and _user(db, "olga").uid_number == 30001


def _import(db: Database, clock, path: Path):
    with db.unit_of_work() as s:
        return import_experiments(SYSTEM, s, clock, parse_file(path), limits=PosixSettings(), origin=str(path))


def test_the_import_takes_members_identities_from_json_and_csv(db: Database, clock, tmp_path: Path) -> None:
    f = tmp_path / "exp.json"
    f.write_text(json.dumps([{"id": "e1", "proposal": "p1", "instrument": "id21", "start_date": "2026-01-01",
                              "end_date": "2026-01-02", "members": [
                                  {"username": "ines", "uid_number": 23456, "gid_number": 23456,
                                   "extra_gids": [24001], "home_path": "/home/ines"}, "jon"]}]))
    result = _import(db, clock, f)
    assert (result.users_created, result.identities_set) == (2, 1)
    ines = _user(db, "ines")
    assert (ines.uid_number, ines.gid_number, ines.extra_gids, ines.home_path, ines.posix_source) == (
        23456, 23456, [24001], "/home/ines", "import")
    assert len(_posix_events(db, ines.id)) == 1
    assert _user(db, "jon").uid_number is None
    assert _import(db, clock, f).identities_set == 0  # idempotent

    c = tmp_path / "exp.csv"
    c.write_text("id,proposal,instrument,start_date,end_date,members\n"
                 "e2,p2,id21,2026-01-01,2026-01-03,jon:23500:23500:24001+24002:/home/jon;ines\n")
    assert _import(db, clock, c).identities_set == 1
    jon = _user(db, "jon")
    assert (jon.uid_number, jon.gid_number, jon.extra_gids, jon.home_path) == (23500, 23500, [24001, 24002],
                                                                              "/home/jon")


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([{"username": "kim", "uid_number": 23456}], "member kim: field 'uid_number': uid 23456 is already ines's"),
        ([{"username": "kim", "uid_number": 900}], "member kim: field 'uid_number': uid_number 900 is below 1000"),
        ([{"username": "kim", "uid_number": 40000}, {"username": "lea", "uid_number": 40000}],
         "member lea: field 'uid_number': uid 40000 is also kim's in this file"),
        ([{"username": "kim", "uid_number": 40000, "home_path": "/home/../root"}], "field 'home_path'"),
    ],
)
def test_a_bad_identity_in_the_import_names_file_entry_and_field_and_writes_nothing(
    db: Database, clock, tmp_path: Path, members: list, expected: str
) -> None:
    with db.unit_of_work() as s:
        make_user(s, clock, "ines", uid_number=23456)
    f = tmp_path / "bad.json"
    f.write_text(json.dumps([{"id": "e9", "proposal": "p9", "instrument": "id21", "start_date": "2026-01-01",
                              "end_date": "2026-01-02", "members": members}]))
    with pytest.raises(ImportFileError) as caught:
        _import(db, clock, f)
    assert expected in caught.value.message and str(f) in caught.value.message
    with db.sessionmaker() as s:
        assert s.scalar(select(User).where(User.username == "kim")) is None


def test_a_bad_csv_member_is_named(tmp_path: Path) -> None:
    c = tmp_path / "exp.csv"
    c.write_text("id,proposal,instrument,start_date,end_date,members\n"
                 "e2,p2,id21,2026-01-01,2026-01-03,jon:abc\n")
    with pytest.raises(ImportFileError, match="field 'members.0.uid_number'"):
        parse_file(c)


def _login_claims(db: Database, clock, name: str, settings, **claims) -> User:
    from visa.auth.oidc import user_from_claims

    with db.unit_of_work() as s:
        user_from_claims(s, clock, {"iss": "https://sso.example.org/realms/visa", "sub": f"sub-{name}",
                                    "preferred_username": name, **claims}, settings=settings)
    return _user(db, name)


def test_provider_claims_count_only_when_trusted_and_within_bounds(db: Database, clock, caplog) -> None:
    """A provider whose users may edit their own attributes must not give a home over /etc or gid 0:
    claims count only where ``posix.sources`` names the provider, and then only within the roots and range."""
    from visa.settings import OidcSettings, Settings

    oidc = OidcSettings(uid_claim="uidNumber", gid_claim="gidNumber", groups_claim="gids", home_claim="home")
    untrusted = Settings(database_url=db.url, secret_key="x", oidc=oidc)
    trusted = Settings(database_url=db.url, secret_key="x", oidc=oidc,
                       posix=PosixSettings(sources=["oidc", "import", "cli", "admin"]))
    good = {"uidNumber": 40001, "gidNumber": 40001, "gids": [40002], "home": "/home/ann"}

    caplog.set_level("WARNING", logger="visa.auth.oidc")
    assert _login_claims(db, clock, "ann", untrusted, **good).uid_number is None  # not named as a source
    assert "posix.sources" in caplog.text
    for name, bad, words in [
        ("eve", {"home": "/etc"}, "/etc"),
        ("ivan", {"home": "/usr/local/ivan"}, "/usr/local"),
        ("olaf", {"home": "/srv/olaf"}, "posix.home_roots"),
        ("gus", {"gids": [0]}, "extra_gids"),
        ("gil", {"gidNumber": 0}, "gid_number"),
    ]:
        caplog.clear()
        uid = 40100 + len(name)
        user = _login_claims(db, clock, name, trusted, **{**good, "uidNumber": uid, **bad})
        assert (user.uid_number, user.gid_number, user.home_path, user.posix_source) == (None, None, None, None), name
        assert "not taken" in caplog.text and words in caplog.text, (name, caplog.text)
    ann = _login_claims(db, clock, "ann", trusted, **good)  # trusted and in bounds: taken
    assert (ann.uid_number, ann.extra_gids, ann.home_path, ann.posix_source) == (40001, [40002], "/home/ann", "oidc")


def test_homes_outside_the_roots_and_gids_outside_the_range_are_refused(app, world, db: Database) -> None:
    client, h = app.test_client(), bearer(world.admin_token)
    before = _user(db, "bob")
    for payload, field, words in [
        ({"uid_number": 5000, "home_path": "/etc"}, "home_path", "/etc"),
        ({"uid_number": 5000, "home_path": "/usr/local"}, "home_path", "/usr/local"),
        ({"uid_number": 5000, "home_path": "/usr/local/bob"}, "home_path", "/usr/local"),
        ({"uid_number": 5000, "home_path": "/root"}, "home_path", "/root"),
        ({"uid_number": 5000, "home_path": "/home"}, "home_path", "posix.home_roots"),
        ({"uid_number": 5000, "home_path": "/data/bob"}, "home_path", "posix.home_roots"),
        ({"uid_number": 5000, "gid_number": 5000, "extra_gids": [65534]}, "extra_gids", "posix.max_gid"),
    ]:
        r = client.put("/api/admin/users/bob/posix", json=payload, headers=h)
        assert r.status_code == 400 and r.get_json()["field"] == field, (payload, r.get_json())
        assert words in r.get_json()["message"], (payload, r.get_json())
    after = _user(db, "bob")
    assert (after.uid_number, after.home_path, after.extra_gids) == (before.uid_number, before.home_path,
                                                                    before.extra_gids)


def test_the_home_roots_and_gid_range_are_checked_settings() -> None:
    from pydantic import ValidationError

    for bad in (["/"], ["/etc"], ["/usr/local"], ["home"], ["/home/../etc"]):
        with pytest.raises(ValidationError, match="home_roots"):
            PosixSettings(home_roots=bad)
    with pytest.raises(ValidationError, match="max_gid"):
        PosixSettings(min_gid=5000, max_gid=4000)
    with pytest.raises(ValidationError):
        PosixSettings(sources=["ldap"])
    assert PosixSettings(home_roots=["/home", "/srv/homes"]).home_roots == ["/home", "/srv/homes"]
