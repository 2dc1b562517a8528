"""What scripts rely on: ``--version``, ``--json`` that says what the text says, and exit status
0 (done), 1 (a domain error, its message on stderr) or 2 (a usage error: click's)."""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.admin.world import make_instance
from tests.factories import make_catalogue, make_cloud, make_user
from visa.cli import main
from visa.clock import FrozenClock
from visa.db import Database
from visa.users.models import Role

Cli = Callable[..., Result]


@pytest.fixture
def world(committed_db: Database) -> dict[str, Any]:
    clock = FrozenClock()
    with committed_db.unit_of_work() as s:
        alice = make_user(s, clock, "alice", roles=(Role.STAFF,), quota=3, email="alice@example.org")
        make_user(s, clock, "bob", uid_number=None, gid_number=None)
        cloud = make_cloud(s, clock, "local")
        make_cloud(s, clock, "spare", "openstack").enabled = False
        plan, _ = make_catalogue(s)
        uid = make_instance(s, clock, alice, plan, cloud, name="tomography").uid
    return {"uid": uid}


def _json(r: Result) -> Any:
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_version() -> None:
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"visa, version {importlib.metadata.version('visa')}"


def _shown(value: Any) -> str:
    return "-" if value is None or value == [] else ",".join(value) if isinstance(value, list) else str(value)


@pytest.mark.parametrize("command", [("users", "list"), ("clouds", "list"), ("instances", "list")])
def test_a_list_in_json_says_what_its_text_says(cli: Cli, world: dict[str, Any], command: tuple[str, ...]) -> None:
    text = cli(*command)
    assert text.exit_code == 0, text.output
    rows = _json(cli(*command, "--json"))
    lines = text.stdout.splitlines()
    assert isinstance(rows, list) and len(rows) == len(lines) >= 1
    shown = {"username", "quota", "uid", "roles", "name", "kind", "state", "owner", "image", "flavour"}
    for row, line in zip(rows, lines, strict=True):  # the same rows, in the same order
        values = [_shown(v) for k, v in row.items() if k in shown]
        assert values and all(v in line for v in values), (row, line)
    if command == ("users", "list"):
        assert [(r["username"], r["roles"], r["uid"]) for r in rows] == [("alice", ["STAFF"], rows[0]["uid"]),
                                                                         ("bob", [], None)]
        assert "uid=-" in lines[1] and "roles=-" in lines[1]
    if command == ("clouds", "list"):
        assert [(r["name"], r["enabled"]) for r in rows] == [("local", True), ("spare", False)]
        assert lines[1].endswith("disabled")
    if command == ("instances", "list"):
        assert rows[0]["uid"] == world["uid"] and rows[0]["cloud"] == "local"


@pytest.mark.parametrize("command", [("users", "show", "alice"), ("instances", "show", "{uid}")])
def test_a_show_in_json_says_what_its_text_says(cli: Cli, world: dict[str, Any], command: tuple[str, ...]) -> None:
    args = [a.format(**world) for a in command]
    text = cli(*args)
    assert text.exit_code == 0, text.output
    data = _json(cli(*args, "--json"))
    assert text.stdout.splitlines() == [f"{k}: {_shown(v)}" for k, v in data.items()]
    if command[0] == "users":
        assert data["email"] == "alice@example.org" and data["roles"] == ["STAFF"] and data["quota"] == 3
    else:
        assert data["uid"] == world["uid"] and data["name"] == "tomography" and data["owner"] == "alice"


def test_render_userdata_in_json(cli: Cli, world: dict[str, Any]) -> None:
    text = cli("instances", "render-userdata", world["uid"])
    assert text.exit_code == 0, text.output
    data = _json(cli("instances", "render-userdata", world["uid"], "--json"))
    assert data["uid"] == world["uid"] and data["user_data"] + "\n" == text.stdout
    assert data["user_data"].startswith("#cloud-config") or "MIME" in data["user_data"]


def test_db_current_in_json(cli: Cli, world: dict[str, Any]) -> None:
    from visa.migrate import head_revision

    data = _json(cli("db", "current", "--json"))
    assert data == {"current": head_revision(), "head": head_revision()}
    assert cli("db", "current").stdout.strip() == f"current: {head_revision()}  head: {head_revision()}"


def test_check_config_json(cli: Cli, world: dict[str, Any]) -> None:
    data = _json(cli("check-config", "--json"))
    assert data["errors"] == 0 and any(f["subject"] and f["level"] == "ok" for f in data["findings"])


@pytest.mark.parametrize("args, message", [
    (("users", "show", "nobody"), "no user 'nobody'"),
    (("instances", "show", "000000000000"), "no instance '000000000000'"),
    (("instances", "render-userdata", "000000000000"), "no instance '000000000000'"),
    (("users", "grant", "alice", "EMPEROR"), "unknown role 'EMPEROR'"),
    (("users", "quota", "alice", "-5"), "invalid quota"),
    (("clouds", "enable", "nowhere"), "no cloud 'nowhere'"),
    (("clouds", "add", "x", "--kind", "vmware"), "unknown cloud kind"),
    (("users", "add", "Not A Name"), "invalid username"),
    (("users", "unix-account", "alice", "no-such-account"), "this host has no unix account no-such-account"),
    (("users", "unix-account", "alice", "daemon"), "daemon is a system account"),
    (("users", "unix-account", "alice", "nobody"), "nobody is a system account"),
    (("users", "unix-account", "alice", "../etc"), "is not a unix account name"),
])
def test_a_domain_error_exits_1_with_its_message_on_stderr(cli: Cli, world: dict[str, Any], args: tuple[str, ...],
                                                           message: str) -> None:
    r = cli(*args)
    assert r.exit_code == 1, r.output
    assert message in r.stderr and r.stdout == ""


@pytest.mark.parametrize("args", [("users", "show"), ("users", "list", "--colour"), ("nosuch",),
                                  ("users", "quota", "alice", "many"), ("users", "grant", "alice", "GUEST",
                                                                        "--until", "soon")])
def test_a_usage_error_exits_2(cli: Cli, world: dict[str, Any], args: tuple[str, ...]) -> None:
    r = cli(*args)
    assert r.exit_code == 2, r.output
    assert "Usage:" in r.stderr and r.stdout == ""


def test_no_progress_bar_off_a_terminal(cli: Cli, world: dict[str, Any]) -> None:
    """CliRunner's stdout is no terminal: the output is the result alone, nothing of a bar."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    r = cli("experiments", "import", str(root / "deploy/demo/experiments.json"))
    assert r.exit_code == 0 and "3 experiments created" in r.stdout
    assert r.stderr == "" and "\r" not in r.output and "\x1b" not in r.output
