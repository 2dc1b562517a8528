"""A real JupyterLab session of the local cloud, with no desktop: a cell running in a kernel keeps
the machine alive with nobody at a desktop, the GPU of another session's process does not, and
JupyterLab culls idle kernels after the time the settings give (here a few seconds)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from websockets.sync.client import unix_connect

from tests.clouds.accounts import remove_account, remove_recorded_accounts
from tests.factories import actor, make_experiment, make_flavour, make_image, make_plan, make_user
from tests.instances.test_activity_signals import UTILIZATION, fake_nvidia_smi
from tests.processes import pids_with_env
from visa.catalogue.models import Protocol
from visa.clouds.local import LocalProvider
from visa.clouds.local import supervisor as local_session
from visa.clouds.models import Cloud
from visa.commands.executor import run_pending_commands
from visa.commands.sync import sync_cloud
from visa.db import Database
from visa.instances import lifecycle, service
from visa.instances.activity import ActivityProbe, Report
from visa.instances.models import Instance, InstanceState
from visa.instances.schemas import CreateInstance
from visa.services import Services
from visa.settings import Settings

CULL_SECONDS = 4


@pytest.fixture
def lab(tmp_path: Path, committed_db: Database, clock) -> Iterator[tuple[Services, str]]:
    db = committed_db
    settings = Settings(data_dir=tmp_path / "data", database_url=db.url, secret_key="k")
    services = Services(settings=settings, database=db, clock=clock)
    root = tmp_path / "instances"
    facility = tmp_path / "facility"
    for area in ("visitor", "processed"):
        (facility / area / "ev280" / "id21").mkdir(parents=True)
    with db.unit_of_work() as s:
        s.add(Cloud(name="local", kind="local", enabled=True, created_at=clock.now(), config={
            "root_dir": str(root),
            # The cloud's own provisioning settings: idle kernels culled after a few seconds.
            "provisioning": {
                "mount_type": "bind", "jupyter_cull_idle_seconds": CULL_SECONDS, "jupyter_cull_interval_seconds": 1,
                "raw_mount_template": str(facility / "visitor/{proposal}/{beamline}"),
                "processed_mount_template": str(facility / "processed/{proposal}/{beamline}"),
            },
        }))
        alice = make_user(s, clock, "alice", uid_number=None, gid_number=None)
        exp = make_experiment(s, members=[alice], proposal="ev280", instrument="id21")
        plan = make_plan(s, make_image(s, "lab", {Protocol.JUPYTER: 8888}), make_flavour(s, "esrf.medium"))
        uid = service.create_instance(
            actor(alice, clock), s, clock, settings,
            CreateInstance(name="notebooks", plan_id=plan.id, experiment_ids=[exp.id]),
        ).uid
    remove_account(LocalProvider("local", {"root_dir": str(root)}).account_name("alice"))
    yield services, uid
    services.close()
    provider = services.provider("local")
    for server in provider.list_servers():
        provider.delete(server.id)
    remove_recorded_accounts(db)


def _instance(db: Database, uid: str) -> Instance:
    with db.sessionmaker() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == uid))
        assert inst is not None
        return inst


def _active(services: Services, uid: str) -> Instance:
    deadline = time.monotonic() + 60
    while True:
        sync_cloud(services, "local", probe_timeout=1)
        inst = _instance(services.database, uid)
        if inst.state == InstanceState.ACTIVE or time.monotonic() > deadline:
            assert inst.state == InstanceState.ACTIVE, inst.error_message
            return inst
        time.sleep(0.3)


def _jupyter_argv(root: Path) -> list[str]:
    prefix = f"{local_session.MARKER_ENV}={root}/".encode()
    for pid in pids_with_env(lambda item: item.startswith(prefix)):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if any(a.startswith("--ServerApp.sock=") for a in argv):
            return argv
    raise AssertionError("no JupyterLab process in the session")


def _report(services: Services, uid: str) -> Report:
    data = services.provider("local").activity_report(uid)
    assert data is not None
    return Report.parse(json.dumps(data), time.monotonic())


def _execute(code: str) -> str:
    return json.dumps({
        "header": {"msg_id": uuid.uuid4().hex, "username": "test", "session": uuid.uuid4().hex,
                   "msg_type": "execute_request", "version": "5.3", "date": "2026-01-01T00:00:00Z"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False},
    })


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)  # one session is enough: the database plays no part
def test_a_busy_kernel_keeps_a_lab_alive_and_idle_kernels_are_culled(
    lab: tuple[Services, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services, uid = lab
    assert run_pending_commands(services) == 1
    inst = _active(services, uid)
    iid, socket, base = inst.id, inst.provider_state["sockets"]["JUPYTER"], f"/jupyter/{uid}"
    auth = {"Authorization": f"token {inst.secret}"}

    # The settings' culling reached JupyterLab.
    argv = _jupyter_argv(tmp_path / "instances")
    assert f"--MappingKernelManager.cull_idle_timeout={CULL_SECONDS}" in argv
    assert "--MappingKernelManager.cull_interval=1" in argv and "--MappingKernelManager.cull_connected=False" in argv

    client = httpx.Client(transport=httpx.HTTPTransport(uds=socket), base_url="http://session", headers=auth,
                          timeout=30)
    with client:
        created = client.post(f"{base}/api/kernels", json={"name": "python3"})
        assert created.status_code == 201, created.text
        kernel = created.json()["id"]
        channels = f"ws://session{base}/api/kernels/{kernel}/channels?session_id={uuid.uuid4().hex}"
        # Ten days with nobody at a desktop (there is none) nor in a tab.
        services.clock.advance(days=10)
        with unix_connect(socket, channels, additional_headers=auth, open_timeout=30) as ws:
            ws.send(_execute("import time; time.sleep(10)"))
            deadline = time.monotonic() + 20
            while (report := _report(services, uid)).busy_kernels == 0:
                assert time.monotonic() < deadline, "the probe never saw the kernel busy"
                time.sleep(0.2)
            assert report.x_idle_ms is None  # no desktop: no input at all

            # The scheduler: computing, so never warned nor deleted.
            assert ActivityProbe(services, sample_gap=0.2).run().computing == [iid]
            result = lifecycle.run(services)
            assert not result.inactivity_warned and not result.deleted
            assert _instance(services.database, uid).last_compute_at == services.clock.now()

            # A busy GPU: only the session's own processes make it the owner's computation.
            gpu = tmp_path / "gpu"
            monkeypatch.setenv("PATH", f"{gpu}:{os.environ['PATH']}")
            session_pid = next(iter(report.cpu_seconds))
            fake_nvidia_smi(gpu, f"{os.getpid()}, 2048\n", UTILIZATION)  # this test's process: not the session's
            assert not _report(services, uid).gpu_busy
            fake_nvidia_smi(gpu, f"{os.getpid()}, 2048\n{session_pid}, 30512\n", UTILIZATION)
            assert _report(services, uid).gpu_busy
            monkeypatch.undo()

            while True:  # the cell ends
                msg = json.loads(ws.recv(timeout=30))
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle" \
                        and msg["parent_header"].get("msg_type") == "execute_request":
                    break
        assert _report(services, uid).busy_kernels == 0

        # Idle and no longer connected: JupyterLab shuts the kernel down on its own.
        deadline = time.monotonic() + 30
        while client.get(f"{base}/api/kernels").json():
            assert time.monotonic() < deadline, "the idle kernel was never culled"
            time.sleep(0.5)
    assert services.provider("local").activity_report(uid)["kernels"] == []  # type: ignore[index]

    # The session owns its run directory: a link in place of its secret is never followed by visa.
    secret = tmp_path / "instances" / uid / local_session.RUN_DIR / local_session.SECRET_FILE
    secret.rename(secret.with_name("moved"))
    secret.symlink_to(secret.with_name("moved"))
    assert services.provider("local").activity_report(uid)["kernels"] is None  # type: ignore[index]
