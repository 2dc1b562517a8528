"""How the import runs: a dry run that changes nothing, a progress bar on a terminal only, and the
scheduled import from the extractor's command or URL (a real script, a real loopback HTTP server)
with the file's validation and its all-or-nothing transaction."""

from __future__ import annotations

import json
import os
import pty
import select as selectmod
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from visa.audit.models import AuditEvent
from visa.db import Database
from visa.experiments import jobs
from visa.experiments.importer import ImportFileError
from visa.experiments.models import Experiment, Instrument
from visa.services import Services
from visa.settings import ImportSourceSettings
from visa.users.models import User

ROOT = Path(__file__).resolve().parents[2]

BASE = {"experiments": [
    {"id": "ev1-id21", "proposal": "ev1", "instrument": "id21", "start_date": "2026-01-05",
     "end_date": "2026-01-08", "title": "First", "members": ["alice", "bob"]},
], "instruments": [{"name": "id21", "scientists": ["carol", "dave"]}]}

NEXT = {"experiments": [
    {"id": "ev1-id21", "proposal": "ev1", "instrument": "id21", "start_date": "2026-01-05",
     "end_date": "2026-01-09", "title": "First", "members": ["alice", "erin"]},
    {"id": "ev2-id21", "proposal": "ev2", "instrument": "id21", "start_date": "2026-02-05",
     "end_date": "2026-02-08", "members": ["bob"]},
], "instruments": [{"name": "id21", "scientists": ["carol", "frank"]}]}


def _state(db: Database) -> dict[str, object]:
    """Everything an import may touch, to compare before and after."""
    with db.sessionmaker() as s:
        return {
            "experiments": {e.external_id: (e.end_date.isoformat(), sorted(u.username for u in e.members))
                            for e in s.scalars(select(Experiment))},
            "scientists": {i.name: sorted(u.username for u in i.scientists) for i in s.scalars(select(Instrument))},
            "users": sorted(s.scalars(select(User.username))),
            "audit": s.scalar(select(func.count(AuditEvent.id))),
        }


def test_dry_run_prints_what_would_change_and_changes_nothing(cli, committed_db: Database, tmp_path: Path) -> None:
    f = tmp_path / "export.json"
    f.write_text(json.dumps(BASE))
    assert cli("experiments", "import", str(f)).exit_code == 0
    before = _state(committed_db)

    f.write_text(json.dumps(NEXT))
    r = cli("experiments", "import", "--dry-run", str(f))
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [
        "would change: experiment ev2-id21: added",
        "would change: experiment ev1-id21: updated (end_date, members)",
        "would change: experiment ev1-id21: member erin added",
        "would change: experiment ev2-id21: member bob added",
        "would change: experiment ev1-id21: member bob removed",
        "would change: instrument id21: scientist frank added",
        "would change: instrument id21: scientist dave removed",
        "would change: user erin: created",
        "would change: user frank: created",
        "would change: user frank: role INSTRUMENT_SCIENTIST granted",
        "dry run, nothing changed: 1 experiments created, 1 updated, 0 unchanged, 2 users created, "
        "0 unix identities set, 1 instrument scientists added, 1 removed",
    ]
    r = cli("experiments", "import", "--dry-run", "--json", str(f))
    plan = json.loads(r.output)
    assert plan["dry_run"] is True and plan["scientists_removed"] == [{"instrument": "id21", "username": "dave"}]
    assert plan["members_removed"] == [{"experiment": "ev1-id21", "username": "bob"}]
    assert _state(committed_db) == before

    assert cli("experiments", "import", str(f)).exit_code == 0  # for real, now
    after = _state(committed_db)
    assert after["scientists"] == {"id21": ["carol", "frank"]}
    assert after["experiments"]["ev1-id21"] == ("2026-01-09", ["alice", "erin"])


def _in_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``args`` with stdout and stderr on a pseudo-terminal; its exit status and all it wrote."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    out = b""
    while True:
        ready, _, _ = selectmod.select([leader], [], [], 60)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    return proc.wait(timeout=60), out.decode("utf-8", "replace")


def test_a_progress_bar_on_a_terminal_only(committed_db: Database, tmp_path: Path) -> None:
    records = [{"id": f"ev{n}-id21", "proposal": f"ev{n}", "instrument": "id21", "start_date": "2026-01-05",
                "end_date": "2026-01-08", "members": [f"user{n % 50}"]} for n in range(300)]
    f = tmp_path / "export.json"
    f.write_text(json.dumps(records))
    env = {**os.environ, "VISA_DATABASE_URL": committed_db.url, "VISA_DATA_DIR": str(tmp_path / "data"),
           "PYTHONPATH": str(ROOT), "COLUMNS": "100", "TERM": "xterm"}
    env.pop("VISA_CONFIG", None)
    code, out = _in_a_terminal([sys.executable, "-m", "visa.cli", "experiments", "import", str(f)], env)
    assert code == 0, out
    assert "importing experiments" in out and "\x1b[" in out  # rich's bar, drawn and redrawn
    assert "300 experiments created" in out

    # In a pipe: the result alone.
    done = subprocess.run([sys.executable, "-m", "visa.cli", "experiments", "import", str(f)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == (
        "0 experiments created, 0 updated, 300 unchanged, 0 users created, 0 unix identities set, "
        "0 instrument scientists added, 0 removed\n")
    assert done.stderr == ""


class _Extractor(BaseHTTPRequestHandler):
    """The facility's extractor: answers ``body`` to a GET with the expected token."""

    body = b""
    status = 200

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != "Bearer s3cret":
            self.send_error(401)
            return
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def extractor() -> Iterator[tuple[type[_Extractor], str]]:
    handler = type("Handler", (_Extractor,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}/export?key=abc"
    server.shutdown()
    server.server_close()


def _with_source(services: Services, **source: object) -> Services:
    settings = services.settings.model_copy(update={"experiments": services.settings.experiments.model_copy(
        update={"import_source": ImportSourceSettings.model_validate(source)})})
    return Services(settings=settings, database=services.database, clock=services.clock)


def test_the_scheduled_import_from_a_url(services: Services, db: Database, extractor) -> None:
    handler, url = extractor
    svc = _with_source(services, url=url, headers={"Authorization": "Bearer s3cret"})
    handler.body = json.dumps(BASE).encode()
    result = jobs.run(svc)
    assert result is not None and result.created == 1
    assert _state(db)["scientists"] == {"id21": ["carol", "dave"]}

    # A bad row: the job fails naming the line and field; nothing of the export is applied.
    bad = json.loads(json.dumps(NEXT))
    bad["experiments"][1]["members"] = ["bob", "Not A Name"]
    handler.body = json.dumps(bad, indent=1).encode()
    before = _state(db)
    with pytest.raises(ImportFileError) as caught:
        jobs.run(svc)
    lines = handler.body.decode().splitlines()
    start = next(n for n, text in enumerate(lines) if '"ev2-id21"' in text)  # the line after its "{"
    port = url.split(":")[2].split("/")[0]
    assert (f"http://127.0.0.1:{port}/export: line {start}: entry 'ev2-id21': field 'members.1.username'"
            in caught.value.message)
    assert "key=abc" not in caught.value.message  # the query may hold a secret
    assert _state(db) == before

    handler.status = 503
    with pytest.raises(ImportFileError, match="HTTP 503"):
        jobs.run(svc)
    wrong = _with_source(services, url=url, headers={"Authorization": "Bearer wrong"})
    with pytest.raises(ImportFileError, match="HTTP 401"):
        jobs.run(wrong)
    assert _state(db) == before


def test_the_scheduled_import_from_a_command(
    services: Services, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VISA_SECRET_KEY", "not for the extractor")
    export = tmp_path / "export.csv"
    export.write_text("id,proposal,instrument,start_date,end_date,members,instrument_scientists\n"
                      "ev1-id21,ev1,id21,2026-01-05,2026-01-08,alice;bob,carol\n")
    script = tmp_path / "extract"
    # The facility's extractor; it is not given visa's settings (their secrets among them).
    script.write_text(f"#!/bin/sh\n[ \"$1\" = --all ] || exit 4\n[ -z \"$VISA_SECRET_KEY\" ] || exit 5\n"
                      f"cat {export}\n")
    script.chmod(0o755)
    svc = _with_source(services, command=[str(script), "--all"], format="csv")
    assert jobs.run(svc).created == 1  # type: ignore[union-attr]
    assert _state(db)["scientists"] == {"id21": ["carol"]}

    export.write_text("id,proposal,instrument,start_date,end_date,members,instrument_scientists\n"
                      "ev1-id21,ev1,id21,2026-01-05,2026-01-08,alice,carol\n"
                      "ev2-id21,ev2,id21,2026-01-05,not a date,alice,\n")
    before = _state(db)
    with pytest.raises(ImportFileError, match=r"extract --all: line 3: entry 'ev2-id21': field 'end_date'"):
        jobs.run(svc)
    assert _state(db) == before

    failing = tmp_path / "failing"
    failing.write_text("#!/bin/sh\necho 'user office database unreachable' >&2\nexit 3\n")
    failing.chmod(0o755)
    with pytest.raises(ImportFileError, match="exited with status 3: user office database unreachable"):
        jobs.run(_with_source(services, command=[str(failing)]))
    slow = tmp_path / "slow"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    with pytest.raises(ImportFileError, match="gave no answer within 0.5 s"):
        jobs.run(_with_source(services, command=[str(slow)], timeout_seconds=0.5))
    with pytest.raises(ImportFileError, match="cannot run"):
        jobs.run(_with_source(services, command=[str(tmp_path / "missing")]))
    assert _state(db) == before


def test_the_command_line_imports_from_the_configured_source(
    cli, committed_db: Database, extractor, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, url = extractor
    handler.body = json.dumps(BASE).encode()
    monkeypatch.setenv("VISA_EXPERIMENTS__IMPORT_SOURCE__URL", url)
    monkeypatch.setenv("VISA_EXPERIMENTS__IMPORT_SOURCE__HEADERS", '{"Authorization": "Bearer s3cret"}')
    r = cli("experiments", "import", "--dry-run")
    assert r.exit_code == 0 and "would change: instrument id21: scientist carol added" in r.output
    assert _state(committed_db)["experiments"] == {}
    r = cli("experiments", "import")
    assert r.exit_code == 0 and r.output.startswith("1 experiments created")
    monkeypatch.delenv("VISA_EXPERIMENTS__IMPORT_SOURCE__URL")
    monkeypatch.delenv("VISA_EXPERIMENTS__IMPORT_SOURCE__HEADERS")
    r = cli("experiments", "import")
    assert r.exit_code == 2 and "give a FILE, or set experiments.import_source" in r.output


def test_the_source_setting_is_checked() -> None:
    with pytest.raises(ValidationError, match="either command or url"):
        ImportSourceSettings.model_validate({"command": ["x"], "url": "https://uo.example.org/export"})
    with pytest.raises(ValidationError, match="either command or url"):
        ImportSourceSettings.model_validate({})
    with pytest.raises(ValidationError, match="http:// or https://"):
        ImportSourceSettings.model_validate({"url": "file:///etc/passwd"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        ImportSourceSettings.model_validate({"url": "https://uo.example.org/export", "tiemout_seconds": 3})


def test_the_scheduler_runs_the_import_only_when_a_source_is_set(services: Services) -> None:
    from visa.scheduler.runner import Runner

    assert "experiments-import" not in [j.name for j in Runner(services).jobs()]
    svc = _with_source(services, url="https://uo.example.org/export")
    job = next(j for j in Runner(svc).jobs() if j.name == "experiments-import")
    assert job.seconds == 3600
