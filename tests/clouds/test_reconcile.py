"""Orphans, missing and adoptable servers from one list call (fast tier)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from visa.clouds.base import Server
from visa.clouds.reconcile import reconcile
from visa.instances.models import InstanceState as S

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def server(
    id: str, state: S = S.ACTIVE, uid: str | None = None, age: timedelta = timedelta(hours=1)
) -> Server:
    return Server(id=id, name=f"visa-{id}", state=state, instance_uid=uid, created_at=NOW - age)


def test_present_missing_and_orphans() -> None:
    listed = [server("a"), server("b"), server("z", uid="zz")]
    result = reconcile(listed, ["a", "b", "gone-1", "gone-0"])
    assert set(result.present) == {"a", "b"}
    assert result.missing == ["gone-0", "gone-1"]
    assert [s.id for s in result.orphans] == ["z"]


def test_servers_on_their_way_out_are_not_orphans() -> None:
    listed = [server("d", S.DELETING), server("x", S.DELETED), server("e", S.ERROR)]
    assert [s.id for s in reconcile(listed, []).orphans] == ["e"]


def test_known_uid_without_id_is_adoptable() -> None:
    result = reconcile([server("n", uid="u-1")], [], known_uids=["u-1"])
    assert result.adoptable["u-1"].id == "n"
    assert not result.orphans


def test_young_servers_are_not_orphans_yet() -> None:
    listed = [
        server("old", age=timedelta(hours=2)),
        server("new", age=timedelta(seconds=30)),
        Server("?", "n", S.ACTIVE),
    ]
    result = reconcile(listed, [], created_before=NOW - timedelta(minutes=10))
    assert [s.id for s in result.orphans] == ["old"]
    assert {s.id for s in result.recent} == {"new", "?"}


def test_known_server_in_any_state_is_present() -> None:
    result = reconcile([server("a", S.DELETED)], ["a"])
    assert result.present["a"].state is S.DELETED and not result.missing
