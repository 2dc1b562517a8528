"""Database queries per second with N open event streams (``/api/events``) and nothing moving,
on PostgreSQL: with notifications (LISTEN/NOTIFY, the default) and, to compare, polling
(``database_notify = false``, what SQLite does and what every stream did before).

    python -m bench.event_streams                          # 100 and 1,000 streams; polling at 100
    python -m bench.event_streams --streams 100 --poll 100 --seconds 5

One ``visa gateway`` process serves the streams (100 users, two instances each, the streams
spread over them); the bench opens them, waits until each has its ``ready`` event, lets them
settle, then counts the database's transactions (``pg_stat_database``: commits + rollbacks;
every query visa makes runs in one) over ``--seconds``. Opening a stream costs a few
queries; those are not in the window (``--settle``: PostgreSQL reports an idle backend's
counts up to 10 s late). The goal: independent of the number of streams.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from bench.stack import Procs, World, make_world, raise_fd_limit, start_gateway, temp_database, transactions

USERS = 100


async def _open(port: int, cookie: str, ready: asyncio.Event, stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: visa_session={cookie}\r\n"
                 f"Accept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    seen = b""
    try:
        while not stop.is_set():
            chunk = await asyncio.wait_for(reader.read(65536), 120)
            if not chunk:
                return
            if not ready.is_set():
                seen += chunk
                if b"event: ready" in seen:
                    ready.set()
    finally:
        writer.close()


async def _measure(port: int, cookies: list[str], streams: int, settle: float, seconds: float,
                   url: str) -> tuple[float, float]:
    stop = asyncio.Event()
    readies = [asyncio.Event() for _ in range(streams)]
    started = time.monotonic()
    tasks = [asyncio.create_task(_open(port, cookies[i % len(cookies)], readies[i], stop)) for i in range(streams)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 600)
    opened = time.monotonic() - started
    await asyncio.sleep(settle)
    before = await asyncio.to_thread(transactions, url)
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    after = await asyncio.to_thread(transactions, url)
    rate = (after - before) / (time.monotonic() - t0)  # (the counter reads from another database)
    alive = sum(not t.done() for t in tasks)
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if alive < streams:
        print(f"  ({streams - alive} stream(s) ended during the window)", file=sys.stderr)
    return rate, opened


def run(world: World, streams: int, *, notify: bool, settle: float, seconds: float) -> tuple[float, float]:
    procs = Procs(world.root)
    try:
        port = start_gateway(procs, world, VISA_DATABASE_NOTIFY="true" if notify else "false")
        return asyncio.run(_measure(port, world.cookies, streams, settle, seconds, world.url))
    finally:
        procs.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="100,1000", help="open streams, with notifications")
    parser.add_argument("--poll", default="100", help="open streams, polling ('' for none)")
    parser.add_argument("--seconds", type=float, default=10.0, help="the counting window")
    parser.add_argument("--settle", type=float, default=12.0,
                        help="wait after the last stream opened (PostgreSQL flushes an idle backend's counts "
                             "up to 10 s late: less would count the opening's queries in the window)")
    parser.add_argument("--users", type=int, default=USERS)
    args = parser.parse_args(argv)
    raise_fd_limit()
    rows = []
    with temp_database("visa_bench_events") as url:
        world = make_world(url, args.users)
        for mode, sizes in (("notify", args.streams), ("poll", args.poll)):
            for n in [int(x) for x in sizes.split(",") if x]:
                rate, opened = run(world, n, notify=mode == "notify", settle=args.settle, seconds=args.seconds)
                rows.append((mode, n, rate, opened))
                print(f"  {mode} {n}: {rate:.1f} transactions/s (opened in {opened:.1f} s)", file=sys.stderr)
    print()
    print(f"Database transactions per second, open event streams idle, one gateway, PostgreSQL "
          f"({args.seconds:g} s window):")
    print(f"{'mode':>8} | {'streams':>8} | {'queries/s':>10} | {'per stream':>10} | opened in")
    for mode, n, rate, opened in rows:
        print(f"{mode:>8} | {n:>8,} | {rate:>10.1f} | {rate / n:>10.3f} | {opened:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
