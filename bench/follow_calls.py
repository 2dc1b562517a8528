"""Cloud list calls per minute with 1, 4 and 8 processes running a command worker, with nothing
moving and with one instance moving, on PostgreSQL.

    python -m bench.follow_calls                         # 1, 4, 8 processes, 30 s each phase
    python -m bench.follow_calls --replicas 1,2 --seconds 5

Each replica is a real ``visa scheduler`` process (its command worker is the one every
``visa run`` replica has too; ``visa web`` replicas run none). The count is the sum of their
``visa_cloud_list_calls_total`` (each process's /metrics) over the window; the leader's full
sync is moved out of the way (``sync_seconds`` = 3600): what is measured is the following of
unstable instances, which only the holder of the ``follower`` lease does, and only for clouds
with unstable instances in the database. "moving": the bench keeps one instance STARTING (it
puts it back every second: the local cloud has no such machine and the sync marks it lost).
Before, every process with a worker listed every cloud every ``unstable_sync_seconds`` (5 s):
12 calls per minute per process, whatever moved.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time

import httpx

from bench.stack import BIN, Procs, World, env_for, make_world, temp_database
from tests.processes import free_port


def _calls(ports: list[int]) -> float:
    total = 0.0
    for port in ports:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5, trust_env=False).text
        for line in text.splitlines():
            if line.startswith("visa_cloud_list_calls_total{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


def _wait_up(ports: list[int], procs: Procs, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            assert all(p.poll() is None for p in procs.procs), "a scheduler exited"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2, trust_env=False).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("the schedulers did not start")
            time.sleep(0.3)


def _keep_moving(world: World, stop: threading.Event) -> None:
    from visa.clock import system_clock
    from visa.db import Database
    from visa.instances.models import Instance, InstanceState

    database = Database(world.url)
    instance_id = world.instances[0][0]
    try:
        while not stop.wait(1.0):
            with database.unit_of_work() as s:
                inst = s.get(Instance, instance_id)
                if inst.state != InstanceState.STARTING:
                    inst.state, inst.state_changed_at = InstanceState.STARTING, system_clock.now()
                    inst.cloud_server_id, inst.error_message = "bench-moving", None
    finally:
        database.dispose()


def run(world: World, replicas: int, seconds: float) -> tuple[float, float]:
    procs = Procs(world.root)
    ports = [free_port() for _ in range(replicas)]
    env = env_for(world, VISA_SCHEDULER__SYNC_SECONDS="3600", VISA_SCHEDULER__LIFECYCLE_SECONDS="3600",
                  VISA_SCHEDULER__ACTIVITY_SECONDS="3600", VISA_SCHEDULER__CLEANUP_SECONDS="86400",
                  VISA_SCHEDULER__USAGE_SECONDS="3600", VISA_SCHEDULER__LEASE_SECONDS="6")
    try:
        for port in ports:
            procs.start([str(BIN / "visa"), "scheduler"], {**env, "VISA_SCHEDULER__METRICS_PORT": str(port)})
        _wait_up(ports, procs)
        time.sleep(3)  # the leases taken
        before = _calls(ports)
        time.sleep(seconds)
        still = (_calls(ports) - before) * 60 / seconds
        stop = threading.Event()
        mover = threading.Thread(target=_keep_moving, args=(world, stop), daemon=True)
        mover.start()
        time.sleep(2)
        before = _calls(ports)
        time.sleep(seconds)
        moving = (_calls(ports) - before) * 60 / seconds
        stop.set()
        mover.join(10)
        return still, moving
    finally:
        procs.stop()
        _reset(world)


def _reset(world: World) -> None:
    from visa.db import Database
    from visa.instances.models import Instance, InstanceState

    database = Database(world.url)
    with database.unit_of_work() as s:
        inst = s.get(Instance, world.instances[0][0])
        inst.state, inst.cloud_server_id = InstanceState.ACTIVE, None
    database.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", default="1,4,8")
    parser.add_argument("--seconds", type=float, default=30.0, help="each phase's window")
    args = parser.parse_args(argv)
    rows = []
    with temp_database("visa_bench_follow") as url:
        world = make_world(url, 2)
        for n in [int(x) for x in args.replicas.split(",") if x]:
            still, moving = run(world, n, args.seconds)
            rows.append((n, still, moving))
            print(f"  {n} replica(s): {still:.1f}/min still, {moving:.1f}/min moving", file=sys.stderr)
    print()
    print(f"Cloud list calls per minute (following unstable instances), {args.seconds:g} s windows:")
    print(f"{'replicas':>8} | {'nothing moving':>14} | {'one moving':>10} | before (every worker, every 5 s)")
    for n, still, moving in rows:
        print(f"{n:>8} | {still:>14.1f} | {moving:>10.1f} | {12 * n:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
