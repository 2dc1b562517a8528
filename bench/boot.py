"""Time from create to a desktop that answers, split into the programs' part and visa's.

    python -m bench.boot [--runs 3] [--modes follow,no-follow]

On the local cloud (real desktop sessions on this machine), with visa's worker running as in
``visa run``. For each create the bench watches, every 20 ms and beside visa:

* ``cloud_active``: the provider first reports the server ACTIVE (session started);
* ``vnc_answers``: the desktop's socket or port first accepts a connection (the programs
  are up: everything before this is the programs starting);
* ``visa_active``: visa's own state becomes ACTIVE (what the browser's event stream sends);
* ``first_pixels``: an RFB client (VncAuth with the instance's secret) has read the screen.

visa's part is ``visa_active - vnc_answers`` (goal: under 1 s). Both worker behaviours run
side by side: ``follow`` (after a command, the moving instances are synced every
``FOLLOW_INTERVAL``) and ``no-follow`` (a sync every ``unstable_sync_seconds``, as before).
The event stream adds up to its ``POLL_SECONDS`` on top (visa/web/events.py).
``--real`` times the same marks on real VMs of the OpenStack sandbox (``sandbox.sh start --real``
first; root: it runs in the sandbox's network namespace): a warm create (the plan's pool boots
a machine, the create takes it; ``warm_boot_s`` is the pool's boot and check, before anyone
asks) and, with ``--cold``, a cold one (the VM boots after the create). With a warm machine the
machine's part, ``vnc_answers``, is the assignment (account, data mounts, desktop start over the
helper's SSH channel); cold, it is the whole boot. The browser's figures (first pixels through
the gateway in Chromium) come from tests/clouds/test_real_vm.py (deploy/openstack-sandbox/README.md).

As root the sessions run as unix accounts the bench makes under a prefix of its own for each
run (``vb<hex>-``, uids from the cloud's ``uid_range``), never an account of visa's or of the
tests, and removes at the end.
"""

from __future__ import annotations

import argparse
import json
import pwd
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

import visa.models  # noqa: F401
from tests.clouds.rfb import RfbClient
from tests.factories import actor, make_experiment, make_flavour, make_image, make_plan, make_user
from visa.catalogue.models import Plan, Protocol
from visa.clock import SystemClock
from visa.clouds.models import Cloud
from visa.commands import readiness
from visa.commands.worker import FOLLOW_INTERVAL, Worker
from visa.db import Database
from visa.instances import service
from visa.instances.models import CommandAction, Instance, InstanceState
from visa.instances.schemas import CreateInstance
from visa.migrate import upgrade
from visa.services import Services
from visa.settings import Settings

TICK = 0.02


def _instance(db: Database, uid: str) -> Instance | None:
    with db.sessionmaker() as s:
        return s.scalar(select(Instance).where(Instance.uid == uid))


def _pixels(inst: Instance, started: float, *, remote: bool = False) -> float | None:
    """Seconds from the create until one full screen was read over RFB."""
    path = ((inst.provider_state or {}).get("sockets") or {}).get("VNC")
    endpoint = readiness.endpoint(inst, Protocol.VNC)
    where: str | int | tuple[str, int] | None = path or (endpoint if remote else (endpoint or (None, None))[1])
    if where is None:
        return None
    with RfbClient(where) as client:
        client.read_screen(client.handshake(inst.secret))
    return time.perf_counter() - started


def one_run(services: Services, plan_id: int, exp_id: int, owner_id: int, n: int,
            timeout: float = 120, cloud: str = "local") -> dict[str, float | None]:
    from visa.users.models import User

    clock = services.clock
    with services.database.unit_of_work() as s:
        owner = s.get(User, owner_id)
        inst = service.create_instance(
            actor(owner, clock), s, clock, services.settings,
            CreateInstance(name=f"bench {n}", plan_id=plan_id, experiment_ids=[exp_id], screen_width=1024,
                           screen_height=768),
        )
        uid = inst.uid
    started = time.perf_counter()
    marks: dict[str, float | None] = {"cloud_active": None, "vnc_answers": None, "visa_active": None,
                                      "first_pixels": None}
    provider = services.provider(cloud)
    while time.perf_counter() - started < timeout and marks["visa_active"] is None:
        now = time.perf_counter() - started
        current = _instance(services.database, uid)
        if current is not None and current.cloud_server_id:
            if marks["cloud_active"] is None:
                server = provider.get(current.cloud_server_id)
                if server is not None and server.state == InstanceState.ACTIVE:
                    marks["cloud_active"] = now
            if marks["vnc_answers"] is None and current.provider_state and readiness.answers(
                current, Protocol.VNC, timeout=0.2
            ):
                marks["vnc_answers"] = time.perf_counter() - started
            if current.state == InstanceState.ACTIVE:
                marks["visa_active"] = now
                marks["first_pixels"] = _pixels(current, started, remote=cloud != "local")
        time.sleep(TICK)
    with services.database.unit_of_work() as s:
        inst = s.scalar(select(Instance).where(Instance.uid == uid))
        service.request_action(actor(inst.owner, clock), s, clock, inst, CommandAction.DELETE)
    return marks


def _remove_accounts(prefix: str) -> None:
    """The unix accounts (and their groups) this run's sessions were given."""
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(prefix):
            subprocess.run(["userdel", entry.pw_name], capture_output=True, check=False)
            subprocess.run(["groupdel", entry.pw_name], capture_output=True, check=False)


def run(runs: int, modes: tuple[str, ...] = ("no-follow", "follow")) -> dict[str, Any]:
    tmp = tempfile.TemporaryDirectory(prefix="visa-bench-boot-")
    root = Path(tmp.name)
    facility = root / "facility"
    (facility / "visitor" / "ev280" / "id21").mkdir(parents=True)
    (facility / "processed" / "ev280" / "id21").mkdir(parents=True)
    url = f"sqlite:///{root / 'visa.db'}"
    db = Database(url)
    upgrade(db.engine)
    clock = SystemClock()
    settings = Settings(data_dir=root / "data", database_url=url, secret_key="bench")
    services = Services(settings=settings, database=db, clock=clock)
    prefix = f"vb{secrets.token_hex(3)}-"  # this run's accounts: no other run's, nor the tests'
    with db.unit_of_work() as s:
        s.add(Cloud(name="local", kind="local", enabled=True, created_at=clock.now(), config={
            "root_dir": str(root / "instances"),
            "account_prefix": prefix,
            "provisioning": {
                "mount_type": "bind",
                "raw_mount_template": str(facility / "visitor/{proposal}/{beamline}"),
                "processed_mount_template": str(facility / "processed/{proposal}/{beamline}"),
            },
        }))
        # No uid of a facility's directory: the session's account gets a free one of uid_range.
        alice = make_user(s, clock, "alice", uid_number=None, gid_number=None)
        exp = make_experiment(s, members=[alice], proposal="ev280", instrument="id21")
        plan = make_plan(s, make_image(s, "desktop", {Protocol.VNC: 5901}), make_flavour(s, "esrf.medium"))
        ids = plan.id, exp.id, alice.id
    results: dict[str, Any] = {"runs": runs, "follow_interval_s": FOLLOW_INTERVAL,
                               "unstable_sync_s": settings.scheduler.unstable_sync_seconds}
    try:
        for mode, follow in (("no-follow", 0.0), ("follow", None)):
            if mode not in modes:
                continue
            worker = Worker(services) if follow is None else Worker(services, follow_seconds=follow)
            worker.start()
            samples = []
            try:
                for n in range(runs):
                    samples.append(one_run(services, *ids, n))
                    time.sleep(1)  # let the delete run
            finally:
                worker.stop()
            results[mode] = _summary(samples)
    finally:
        provider = services.provider("local")
        for server in provider.list_servers():
            provider.delete(server.id)
        services.close()
        _remove_accounts(prefix)
        tmp.cleanup()
    return results


def _summary(samples: list[dict[str, float | None]]) -> dict[str, Any]:
    def median(key: str) -> float | None:
        values = [s[key] for s in samples if s[key] is not None]
        return round(statistics.median(values), 3) if values else None

    visa_part = [s["visa_active"] - s["vnc_answers"] for s in samples
                 if s["visa_active"] is not None and s["vnc_answers"] is not None]
    return {
        "cloud_active_s": median("cloud_active"),
        "vnc_answers_s": median("vnc_answers"),
        "visa_active_s": median("visa_active"),
        "first_pixels_s": median("first_pixels"),
        "visa_part_s": round(statistics.median(visa_part), 3) if visa_part else None,
        "visa_part_max_s": round(max(visa_part), 3) if visa_part else None,
        "samples": samples,
    }


REAL_SANDBOX = Path(__file__).resolve().parents[1] / "deploy" / "openstack-sandbox" / "sandbox.py"
REAL_NETNS = "visa-sandbox-real"
REAL_NFS = "10.213.0.1"
REAL_BOOT_TIMEOUT = 900.0


def run_real(cold: bool) -> dict[str, Any]:
    """A warm create (and, with ``cold``, a cold one) on the real-VM sandbox, in its namespace."""
    from tests.netns import run_in

    creds = json.loads(subprocess.run([sys.executable, str(REAL_SANDBOX), "--real", "credentials", "--json"],
                                      capture_output=True, text=True, check=True, timeout=120).stdout)
    return run_in(REAL_NETNS, _real, creds, cold)


def _real(creds: dict[str, Any], cold: bool) -> dict[str, Any]:
    from visa.instances import warm

    tmp = tempfile.TemporaryDirectory(prefix="visa-bench-boot-real-")
    root = Path(tmp.name)
    url = f"sqlite:///{root / 'visa.db'}"
    db = Database(url)
    upgrade(db.engine)
    clock = SystemClock()
    settings = Settings(data_dir=root / "data", database_url=url, secret_key="bench", provisioning={
        "raw_mount_template": f"{REAL_NFS}:/facility/visitor/{{proposal}}/{{beamline}}",
        "processed_mount_template": f"{REAL_NFS}:/facility/processed/{{proposal}}/{{beamline}}",
    }, instance_name_prefix=f"vb{secrets.token_hex(3)}")
    services = Services(settings=settings, database=db, clock=clock)
    with db.unit_of_work() as s:
        cloud = Cloud(name="sandbox-real", kind="openstack", enabled=True, created_at=clock.now(), config=creds)
        s.add(cloud)
        s.flush()
        image = make_image(s, "vm-desktop", {Protocol.VNC: 5901})
        image.cloud_image_ref, image.cloud_id, image.options = "visa-sandbox-desktop", cloud.id, {
            "desktop_session": "openbox"}
        flavour = make_flavour(s, "visa.vm")
        flavour.cloud_flavour_ref, flavour.cloud_id, flavour.cores, flavour.memory_mb = "visa.vm", cloud.id, 1, 1024
        alice = make_user(s, clock, "alice", uid_number=21001, gid_number=21001)
        exp = make_experiment(s, members=[alice], proposal="ev280", instrument="id21")
        plan = make_plan(s, image, flavour)
        plan.warm = [{"from": "00:00", "to": "24:00", "count": 1}]
        ids = plan.id, exp.id, alice.id
    results: dict[str, Any] = {"cloud": "OpenStack sandbox, Nova libvirt (plain emulation)"}
    worker = Worker(services)
    worker.start()
    try:
        started = time.perf_counter()
        uid = None
        while uid is None:
            assert time.perf_counter() - started < REAL_BOOT_TIMEOUT, "no warm machine ready"
            ready = warm.run(services).ready
            uid = ready[0] if ready else None
            time.sleep(1)
        with db.unit_of_work() as s:  # no refill: its boot would share the two cores with the timed one
            s.get(Plan, ids[0]).warm = []  # type: ignore[union-attr]
        sample = one_run(services, *ids, 0, timeout=120, cloud="sandbox-real")
        results["warm"] = {**_summary([sample]), "warm_boot_s": round(time.perf_counter() - started, 1)}
        if cold:
            time.sleep(5)
            results["cold"] = _summary([one_run(services, *ids, 1, timeout=REAL_BOOT_TIMEOUT, cloud="sandbox-real")])
            # Side by side: each mark of the cold create and of the warm one (seconds after the create).
            results["cold_vs_warm"] = {key: [results["cold"][key], results["warm"][key]] for key in (
                "cloud_active_s", "vnc_answers_s", "visa_active_s", "first_pixels_s")}
    finally:
        worker.stop()
        provider = services.provider("sandbox-real")
        ours = [server.id for server in provider.list_servers() if settings.instance_name_prefix in server.name]
        for server_id in ours:  # this run's only
            provider.delete(server_id)
        deadline = time.perf_counter() + 300
        while any(provider.get(i) is not None for i in ours) and time.perf_counter() < deadline:
            time.sleep(2)  # gone before the sandbox may be stopped: a later run finds nothing of ours
        services.close()
        tmp.cleanup()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="no-follow,follow", help="worker behaviours to time")
    parser.add_argument("--real", action="store_true", help="real VMs on the real-VM sandbox: a warm create")
    parser.add_argument("--cold", action="store_true", help="with --real, a cold create too (minutes)")
    args = parser.parse_args()
    if args.real:
        print(json.dumps(run_real(args.cold), indent=1))
        return
    print(json.dumps(run(args.runs, tuple(args.modes.split(","))), indent=1))


if __name__ == "__main__":
    main()
