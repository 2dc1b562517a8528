"""GPU use and Jupyter kernels as activity: the parsers on nvidia-smi's and jupyter-server's real
formats and on hostile answers, the probe script inside the machine, and the scheduler's decisions.

No GPU runs here, so ``nvidia-smi`` is a test double: a script that prints output recorded in
the format NVIDIA documents for ``--query-compute-apps=pid,used_memory`` and
``--query-gpu=utilization.gpu`` with ``--format=csv,noheader,nounits`` (``nvidia-smi
--help-query-compute-apps``: one line per process, ``pid, used_memory`` in MiB, ``[N/A]`` where
the driver cannot tell; ``--help-query-gpu``: one line per GPU, a percentage), and refuses any
other way of asking, so that the probe asking otherwise fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.services import add_instance
from visa.clock import FrozenClock
from visa.instances import lifecycle, signals
from visa.instances.activity import ActivityProbe, Report, Target
from visa.instances.models import Instance
from visa.services import Services

ROOT = Path(__file__).resolve().parents[2]

# Recorded from an A40 machine with two CUDA processes (a reconstruction and an idle notebook).
APPS = "48213, 30512\n48377, 1024\n"
UTILIZATION = "87\n"
IDLE_UTILIZATION = "0\n"


def fake_nvidia_smi(directory: Path, apps: str, utilization: str) -> Path:
    """An ``nvidia-smi`` printing ``apps`` (``@PARENT@`` standing for its caller's pid) and
    ``utilization`` for the probe's two queries, asked the probe's way, and nothing else."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "apps").write_text(apps)
    (directory / "utilization").write_text(utilization)
    program = directory / "nvidia-smi"
    program.write_text(
        "#!/bin/sh\n"
        '[ "$2" = "--format=csv,noheader,nounits" ] || { echo "unexpected format $2" >&2; exit 2; }\n'
        'case "$1" in\n'
        f'  --query-compute-apps=pid,used_memory) exec sed "s/@PARENT@/$PPID/" "{directory}/apps";;\n'
        f'  --query-gpu=utilization.gpu) exec cat "{directory}/utilization";;\n'
        '  *) echo "unexpected query $1" >&2; exit 2;;\n'
        "esac\n"
    )
    program.chmod(0o755)
    return program


# ---------------------------------------------------------------- parsers


def test_nvidia_smi_output_in_its_documented_format_is_read() -> None:
    assert signals.compute_apps(APPS) == {48213: 30512, 48377: 1024}
    assert signals.compute_apps("48213, [N/A]\n") == {48213: None}  # no memory figure: still a CUDA process
    assert signals.utilization(UTILIZATION) == (87,)
    assert signals.utilization("0\n100\n") == (0, 100)  # one line per GPU
    assert signals.compute_apps("") == {} and signals.utilization("") == ()  # no GPU process, no GPU


@pytest.mark.parametrize("apps, utilization", [
    ("No devices were found\n", "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."),
    ("-48213, 30512\n48213, -1\n", "-87\n"),  # negative
    ("48213, 1e9\nnan, 10\n48213\n48213, 1, 2\n0, 100\n", "inf\n1e2\n101\n87 %\n[N/A]\n"),  # not numbers; too many fields
    ("4821399999999, 10\n", "99999999999999999999\n"),  # beyond any pid / percentage
    ("\x00\x1b[31m48213, 30512\u202e\n", "８７\n"),  # control characters, non-ASCII digits
    (None, 87),  # not text at all
])
def test_hostile_nvidia_smi_output_counts_as_no_gpu_activity(apps: object, utilization: object) -> None:
    found_apps, found_percents = signals.compute_apps(apps), signals.utilization(utilization)
    assert not signals.gpu_busy(found_apps, found_percents, {48213})
    assert all(pid > 0 for pid in found_apps) and all(0 <= p <= 100 for p in found_percents)


def test_huge_nvidia_smi_output_is_read_up_to_a_bound() -> None:
    flood = "48213, 30512\n" * 1_000_000  # 13 MB
    assert len(signals.compute_apps(flood)) == 1
    many = "".join(f"{pid}, 1\n" for pid in range(1, 100_000))
    assert len(signals.compute_apps(many)) <= signals.MAX_LINES
    assert len(signals.utilization("87\n" * 1_000_000)) <= signals.MAX_LINES


def test_a_busy_gpu_counts_only_with_a_process_of_the_owner_on_it() -> None:
    apps = signals.compute_apps(APPS)
    assert signals.gpu_busy(apps, (87,), owners_pids={48213, 100})
    # Another account's computation (another session on a shared host): not the owner's activity.
    assert not signals.gpu_busy(apps, (87,), owners_pids={100, 101})
    # The owner's model held on an idle GPU between two cells: not computing.
    assert not signals.gpu_busy(apps, (0,), owners_pids={48213})
    assert not signals.gpu_busy(apps, (signals.GPU_BUSY_PERCENT - 1,), owners_pids={48213})


def test_kernels_as_jupyter_server_lists_them() -> None:
    # GET /api/kernels of jupyter-server 2: one object per kernel.
    answer = json.loads("""[
      {"id": "6f1b", "name": "python3", "last_activity": "2026-12-07T10:15:02.123456Z",
       "execution_state": "busy", "connections": 1},
      {"id": "9a2c", "name": "python3", "last_activity": "2026-12-07T09:00:00.000000Z",
       "execution_state": "idle", "connections": 0}
    ]""")
    found = signals.kernels(answer)
    assert [k.busy for k in found] == [True, False]
    assert found[0].last_activity == datetime(2026, 12, 7, 10, 15, 2, 123456, tzinfo=UTC)


@pytest.mark.parametrize("answer", [
    None, "busy", 42, {"execution_state": "busy"}, [None, 1, "busy", ["busy"]],
    [{"execution_state": ["busy"], "last_activity": 12}], [{"execution_state": "BUSY"}],
    [{"last_activity": "yesterday"}], [{"last_activity": "2026-12-07T10:15:02"}],  # no zone: unknown time
    [{"last_activity": "9" * 100_000}],
])
def test_hostile_kernel_lists_count_as_no_busy_kernel(answer: object) -> None:
    assert not any(k.busy or k.last_activity for k in signals.kernels(answer))


@pytest.mark.parametrize("text", [
    "[]", "null", '"x"', '{"processes": 5}', '{"processes": [{"pid": "x", "cpu_seconds": 1}]}',
    '{"load": 5}', '{"x_idle_ms": [1]}', '{"cpu_count": [2]}', '{"processes": [{}]}', "{",
    '{"x_idle_ms": 1e400}', '{"processes": [null]}',
])
def test_a_report_that_is_not_one_is_a_failed_probe_not_a_crash(text: str) -> None:
    with pytest.raises(ValueError):  # the probe of that machine failed; the others go on
        Report.parse(text, 0.0)


def test_gpu_and_kernels_of_the_wrong_shape_are_no_activity() -> None:
    report = Report.parse('{"processes": [{"pid": 7, "cpu_seconds": 1}], "gpu": ["7, 10", "99"], "kernels": {}}', 0.0)
    assert not report.gpu_busy and report.busy_kernels == 0
    report = Report.parse('{"gpu": {"apps": 7, "utilization": ["99"]}, "kernels": "busy"}', 0.0)
    assert not report.gpu_busy and report.busy_kernels == 0


# ---------------------------------------------------------------- the probe inside the machine


def _run_probe(tmp_path: Path, apps: str, utilization: str, kernels: str) -> dict:
    """The real probe script, with its environment file and helpers moved into ``tmp_path``."""
    nvidia = fake_nvidia_smi(tmp_path / "gpu", apps, utilization)
    (tmp_path / "instance.env").write_text(
        f"VISA_OWNER={_user()}\nVISA_VNC_PORT=\nVISA_JUPYTER_PORT=8888\n"
    )
    (tmp_path / "kernels").write_text(f"#!/bin/sh\ncat <<'EOF'\n{kernels}\nEOF\n")
    (tmp_path / "kernels").chmod(0o755)
    source = (ROOT / "visa/provisioning/files/probe.py").read_text()
    for old, new in (
        ('"/etc/visa/instance.env"', repr(str(tmp_path / "instance.env"))),
        ('"/usr/bin/nvidia-smi"', repr(str(nvidia))),
        ('["sudo", "-n", "-u", OWNER, "/usr/local/libexec/visa/jupyter-kernels"]', repr([str(tmp_path / "kernels")])),
    ):
        assert old in source
        source = source.replace(old, new)
    (tmp_path / "probe").write_text(source)
    out = subprocess.run([sys.executable, str(tmp_path / "probe")], capture_output=True, text=True, timeout=30,
                         env={"PATH": os.environ["PATH"], "SSH_ORIGINAL_COMMAND": "visa-probe"}, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def test_the_probe_in_the_machine_passes_on_nvidia_smi_and_the_kernels(tmp_path: Path) -> None:
    # The fake nvidia-smi's caller is the probe, a process of the owner's: its pid stands for the
    # owner's CUDA process. 4194305 is above any pid Linux gives (pid_max): nobody's.
    busy = '[{"execution_state": "busy", "last_activity": "2026-12-07T10:00:00.5Z"}]'
    report = _run_probe(tmp_path / "a", "@PARENT@, 30512\n4194305, 2048\n", UTILIZATION, busy)
    assert report["gpu"]["utilization"] == UTILIZATION and "4194305, 2048" in report["gpu"]["apps"]
    assert report["kernels"] == json.loads(busy)
    parsed = Report.parse(json.dumps(report), 0.0)
    assert parsed.gpu_busy and parsed.busy_kernels == 1

    # Only somebody else's process on the busy GPU; JupyterLab answering nonsense.
    report = _run_probe(tmp_path / "b", "4194305, 2048\n", UTILIZATION, "<html>not json</html>")
    assert report["kernels"] is None
    parsed = Report.parse(json.dumps(report), 0.0)
    assert not parsed.gpu_busy and parsed.busy_kernels == 0


# ---------------------------------------------------------------- the scheduler's decisions


def _reader(report: dict):
    """The machine's side (SSH) as a double: every read answers ``report``."""
    import time

    def read(target: Target, count: int, gap: float) -> list[Report]:
        return [Report.parse(json.dumps(report), time.monotonic()) for _ in range(count)]

    return read


def _idle_desktop(**extra: object) -> dict:
    # The owner's processes use no CPU between reports; nobody touched the desktop for 30 days.
    return {"x_idle_ms": 30 * 86400 * 1000, "load": [0.0, 0.0, 0.0], "cpu_count": 16,
            "processes": [{"pid": 48213, "command": "python", "cpu_seconds": 12.5}], **extra}


@pytest.mark.parametrize("what", ["gpu", "kernel"])
def test_a_machine_computing_on_its_gpu_or_in_a_busy_kernel_is_never_reaped(
    services: Services, world, clock: FrozenClock, what: str
) -> None:
    with services.database.unit_of_work() as s:
        iid = add_instance(s, clock, world, address="10.0.0.5").id
    busy = {"gpu": {"gpu": {"apps": APPS, "utilization": UTILIZATION}},
            "kernel": {"kernels": [{"execution_state": "busy", "last_activity": "2026-01-01T00:00:00Z"}]}}[what]
    target = [Target(iid, "u", "10.0.0.5", 22)]
    probe = ActivityProbe(services, _reader(_idle_desktop(**busy)), sample_gap=0)
    for _ in range(40):  # ten days, no input, the CPU idle, the GPU or a kernel busy
        clock.advance(hours=6)
        result = probe.run(target)
        assert result.failed == {} and result.computing == [iid]
        r = lifecycle.run(services)
        assert not r.inactivity_warned and not r.deleted
    # The computation ends (the GPU idle, the kernel too): warned once the limit nears.
    probe = ActivityProbe(services, _reader(_idle_desktop(gpu={"apps": APPS, "utilization": IDLE_UTILIZATION},
                                                          kernels=[{"execution_state": "idle"}])), sample_gap=0)
    warned = []
    for _ in range(16):
        clock.advance(hours=6)
        assert probe.run(target).computing == []
        warned += lifecycle.run(services).inactivity_warned
    assert warned == [iid]


def test_a_cell_run_between_two_probes_counts_and_a_kernel_clock_ahead_does_not(
    services: Services, world, clock: FrozenClock
) -> None:
    with services.database.unit_of_work() as s:
        iid = add_instance(s, clock, world, address="10.0.0.5").id
    target = [Target(iid, "u", "10.0.0.5", 22)]
    ran = clock.now() - timedelta(minutes=3)
    kernels = [{"execution_state": "idle", "last_activity": ran.isoformat()}]
    assert ActivityProbe(services, _reader(_idle_desktop(kernels=kernels)), sample_gap=0).run(target).computing == []
    with services.database.sessionmaker() as s:
        assert s.get(Instance, iid).last_compute_at == ran
    ahead = [{"execution_state": "idle", "last_activity": "2999-01-01T00:00:00Z"}]
    ActivityProbe(services, _reader(_idle_desktop(kernels=ahead)), sample_gap=0).run(target)
    with services.database.sessionmaker() as s:
        assert s.get(Instance, iid).last_compute_at == clock.now()


def test_an_idle_gpu_machine_is_warned_sooner_than_an_idle_cpu_machine(
    services: Services, world, clock: FrozenClock
) -> None:
    from sqlalchemy import select

    from tests.factories import make_flavour, make_plan
    from visa.catalogue.models import Image

    with services.database.unit_of_work() as s:
        gpu = make_flavour(s, "gpu", gpu="NVIDIA A40")
        gpu.idle_warning_hours = 12
        plan = make_plan(s, s.scalars(select(Image)).first(), gpu)
        start = clock.now()
        gpu_i = add_instance(s, clock, world, plan_id=plan.id).id
        cpu_i = add_instance(s, clock, world).id
    when: dict[tuple[str, int], datetime] = {}
    while clock.now() < start + timedelta(days=3, hours=1):
        clock.advance(hours=1)
        r = lifecycle.run(services)
        for i in r.inactivity_warned:
            when[("warned", i)] = clock.now()
        for i in r.deleted:
            when[("deleted", i)] = clock.now()
    # The GPU machine: warned after 12 h idle, deleted the usual 24 h later.
    assert when[("warned", gpu_i)] == start + timedelta(hours=12)
    assert when[("deleted", gpu_i)] == start + timedelta(hours=36)
    # The CPU machine: the owner's limit (4 days, warned a day before).
    assert when[("warned", cpu_i)] == start + timedelta(days=3) and ("deleted", cpu_i) not in when
