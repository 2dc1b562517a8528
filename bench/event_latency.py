"""Event latency from a commit in one process to the client of another, p50/p99, on PostgreSQL.

    python -m bench.event_latency                 # 2 gateways, 100 changes
    python -m bench.event_latency --changes 20 --gateways 1

The bench process plays the web replica: it changes an instance's state in a transaction of
its own (visa's Database, so the commit notifies as the services' do), the clock read just
before the commit. ``--gateways`` ``visa gateway`` processes (separate processes, as
replicas) each serve one open event stream of the instance's owner; the latency is the time
until each stream has delivered the ``instance`` event with the new state. With polling
(``--poll``, ``database_notify = false``) for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time

from bench.stack import Procs, World, make_world, percentile, raise_fd_limit, start_gateway, temp_database


class Stream:
    def __init__(self, port: int, cookie: str) -> None:
        self.port, self.cookie = port, cookie
        self.events: asyncio.Queue[tuple[float, str, dict]] = asyncio.Queue()

    async def run(self, ready: asyncio.Event) -> None:
        while True:  # as a browser does: a stream that ends (polling: after 60 s) is opened again
            await self._once(ready)

    async def _once(self, ready: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: visa_session={self.cookie}\r\n\r\n"
                     .encode())
        await writer.drain()
        buf = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                at = time.time()
                buf += chunk
                while b"\n\n" in buf:
                    block, buf = buf.split(b"\n\n", 1)
                    name, data = "", ""
                    for line in block.decode(errors="replace").splitlines():
                        if line.startswith("event: "):
                            name = line[7:]
                        elif line.startswith("data: "):
                            data = line[6:]
                    if name == "ready":
                        ready.set()
                    elif name == "instance":
                        await self.events.put((at, name, json.loads(data)))
        finally:
            writer.close()


def _flip(world: World, database, instance_id: int, state: str) -> float:
    from visa.clock import system_clock
    from visa.instances.models import Instance, InstanceState

    with database.unit_of_work() as s:
        inst = s.get(Instance, instance_id)
        inst.state, inst.state_changed_at = InstanceState(state), system_clock.now()
        s.flush()
        at = time.time()
    return at


async def _measure(world: World, ports: list[int], changes: int) -> list[float]:
    import visa.instances.changes  # the commit hook that notifies
    import visa.models  # noqa: F401
    from visa.db import Database

    database = Database(world.url)
    streams = [Stream(p, world.cookies[0]) for p in ports]
    readies = [asyncio.Event() for _ in streams]
    tasks = [asyncio.create_task(s.run(r)) for s, r in zip(streams, readies, strict=True)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
    await asyncio.sleep(0.5)
    instance_id = world.instances[0][0]
    latencies: list[float] = []
    missed: list[int] = []
    try:
        for n in range(changes):
            state = "STOPPED" if n % 2 == 0 else "ACTIVE"
            at = await asyncio.to_thread(_flip, world, database, instance_id, state)
            for stream in streams:
                while True:
                    try:
                        got, _name, data = await asyncio.wait_for(stream.events.get(), 10)
                    except TimeoutError:  # changed while its stream reconnected: the page reloads it
                        missed.append(n)
                        break
                    if data["instance"]["state"] == state:
                        latencies.append(got - at)
                        break
            await asyncio.sleep(random.uniform(0.05, 0.5))  # not in step with a poll
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        database.dispose()
    if missed:
        print(f"  {len(missed)} change(s) missed while a stream reconnected", file=sys.stderr)
    return latencies


def run(world: World, gateways: int, changes: int, *, notify: bool) -> list[float]:
    procs = Procs(world.root)
    try:
        ports = [start_gateway(procs, world, VISA_DATABASE_NOTIFY="true" if notify else "false")
                 for _ in range(gateways)]
        return asyncio.run(_measure(world, ports, changes))
    finally:
        procs.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--poll", action="store_true", help="also measure polling (database_notify = false)")
    args = parser.parse_args(argv)
    raise_fd_limit()
    rows = []
    with temp_database("visa_bench_latency") as url:
        world = make_world(url, 2)
        for notify in (True, False) if args.poll else (True,):
            lat = run(world, args.gateways, args.changes, notify=notify)
            rows.append(("notify" if notify else "poll", lat))
    print()
    print(f"Commit in one process -> event received from {args.gateways} other process(es), "
          f"{args.changes} changes, PostgreSQL:")
    print(f"{'mode':>8} | {'events':>6} | {'p50 ms':>8} | {'p99 ms':>8} | {'max ms':>8}")
    for mode, lat in rows:
        print(f"{mode:>8} | {len(lat):>6} | {percentile(lat, 50) * 1000:>8.1f} | {percentile(lat, 99) * 1000:>8.1f} "
              f"| {max(lat) * 1000:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
