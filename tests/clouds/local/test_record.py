"""The session record: written and read back by the provider and by the supervisor script,
which loads the record module beside it without visa's package (and so must be able to)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from visa.clouds.local import record as records
from visa.clouds.local import supervisor
from visa.clouds.local.record import Mount, RecordError, SessionAccount, SessionRecord


def _record(**changes: Any) -> SessionRecord:
    base = SessionRecord(
        name="alice-1",
        instance_uid="u1",
        created_at="2026-01-01T00:00:00+00:00",
        protocols={"VNC": 5900, "JUPYTER": 8888},
        screen_width=1280,
        screen_height=800,
        keyboard_layout="fr-ch-qwertz",
        owner_username="alice",
        cores=2,
        memory_mb=2048,
        mounts=[Mount("/srv/raw", "/data/raw", True), Mount("/srv/out", "/data/out", False)],
        isolation="sandbox",
        mount_mode="sandbox",
        vnc_server="tigervnc",
        path="/usr/bin:/bin",
        programs={"bwrap": "/usr/bin/bwrap"},
        tools={"setxkbmap": True},
        jupyter_command=["/usr/bin/python3", "-m", "jupyterlab"],
        jupyter_allow_origin="*",
        network="outside",
        account=SessionAccount("visa-alice", 200001, 200001, [3000]),
        home="/home/visa-alice",
        slirp_account=[999, 999],
        sandbox_argv=["bwrap", "--", "true"],
        sandbox_fds=[1],
        seccomp=True,
    )
    return base.replace(**changes)


def _written(record: SessionRecord, tmp_path: Path) -> Path:
    path = tmp_path / supervisor.INSTANCE_FILE
    supervisor.write_record(path, record)
    return path


def test_a_record_reads_back_as_written(tmp_path: Path) -> None:
    record = _record()
    path = _written(record, tmp_path)
    assert records.read(path) == record
    data = json.loads(path.read_text())
    assert data["version"] == records.VERSION and data["account"]["uid"] == 200001
    assert data["marker"] is None and data["home_dir"] is None
    assert path.stat().st_mode & 0o077 == 0


def test_a_missing_record_is_none_and_a_record_is_frozen(tmp_path: Path) -> None:
    assert records.read(tmp_path / "absent.json") is None
    with pytest.raises(AttributeError):
        _record().cores = 64  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ports": {"VNC": 5901}}, "field 'ports' is unknown"),
        ({"cores": "2"}, "field 'cores' must be an integer, not a string"),
        ({"cores": True}, "field 'cores' must be an integer, not a boolean"),
        ({"seccomp": 1}, "field 'seccomp' must be true or false, not a number"),
        ({"mounts": [{"source": "/srv", "target": "/data"}]}, "field 'mounts'[0]: field 'read_only' is missing"),
        ({"mounts": "/srv"}, "field 'mounts' must be a list, not a string"),
        ({"account": {"name": "a", "uid": "0", "gid": 1}}, "field 'account': field 'uid' must be an integer"),
        ({"account": {"name": "a", "uid": 1, "gid": 1, "shell": "/bin/sh"}}, "field 'account': field 'shell' is unknown"),
        ({"tools": {"setxkbmap": "yes"}}, "field 'tools'['setxkbmap'] must be true or false"),
        ({"version": 2}, "record version 2, this visa reads version 1"),
    ],
)
def test_a_malformed_record_names_its_file_and_field(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    path = _written(_record(), tmp_path)
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(RecordError) as caught:
        records.read(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value), caught.value


@pytest.mark.parametrize("missing", ["name", "protocols", "isolation", "jupyter_command"])
def test_a_record_missing_a_required_field_is_refused(tmp_path: Path, missing: str) -> None:
    path = _written(_record(), tmp_path)
    data = json.loads(path.read_text())
    del data[missing]
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=f"{path}: field '{missing}' is missing"):
        records.read(path)


def test_what_is_no_record_is_refused(tmp_path: Path) -> None:
    path = tmp_path / supervisor.INSTANCE_FILE
    for text, message in (("{", "not JSON"), ("[1]", "a session record is a JSON object, not a list")):
        path.write_text(text)
        with pytest.raises(RecordError, match=message):
            records.read(path)


def test_a_record_of_an_earlier_visa_still_reads(tmp_path: Path) -> None:
    """Written before records had a version: keys this visa no longer reads are skipped, what
    it lacks takes the defaults (so its sessions still list, stop and start)."""
    data = json.loads(_record().to_json())
    for key in ("version", "programs", "session_log_max_bytes", "network", "seccomp", "cgroups"):
        data.pop(key)
    path = tmp_path / supervisor.INSTANCE_FILE
    path.write_text(json.dumps({**data, "ports": {"VNC": 5901}}))
    record = records.read(path)
    assert record is not None and record.name == "alice-1" and record.programs == {}
    assert record.session_log_max_bytes == records.DEFAULT_LOG_MAX_BYTES and not record.seccomp
    path.write_text(json.dumps({**data, "cores": "2"}))  # still typed
    with pytest.raises(RecordError, match="field 'cores' must be an integer"):
        records.read(path)


def test_the_supervisor_script_reads_the_record_without_visa(tmp_path: Path) -> None:
    """Run as the provider runs it (python -I, nothing of visa importable): the script loads the
    record module beside it, and refuses a malformed record before it forks, naming the field."""
    instance = tmp_path / "inst"
    instance.mkdir()
    path = _written(_record(), instance)
    probe = (
        "import runpy, sys; sys.modules['visa'] = None; sys.argv = ['supervisor.py'];"
        f"ns = runpy.run_path({supervisor.__file__!r}, run_name='probe');"
        f"r = ns['records'].read(__import__('pathlib').Path({str(path)!r}));"
        "print(r.account.name, r.mounts[1].target, ns['records'].__name__)"
    )
    done = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["visa-alice", "/data/out", "visa_session_record"]
    path.write_text(path.read_text().replace('"cores": 2', '"cores": "2"'))
    done = subprocess.run([sys.executable, "-I", supervisor.__file__, str(instance)], capture_output=True,
                          text=True, check=False, timeout=30)  # fmt: skip
    assert done.returncode == 1 and "field 'cores' must be an integer" in done.stderr, done.stderr
    assert not (instance / supervisor.PID_FILE).exists()
