"""Cloud API calls and wall time of one state sync as the number of servers grows.

visa syncs a cloud with one paginated ``GET /servers/detail?tags=visa``; the alternative
(one ``GET /servers/{id}`` per instance, as simpler schedulers do) is measured beside it,
on the same servers of the OpenStack sandbox (deploy/openstack-sandbox/).

    python -m bench.sync_calls                       # 100 and 1,000 servers measured
    python -m bench.sync_calls --sizes 100,1000,5000 # 5,000 too (long on 2 cores)
    python -m bench.sync_calls --extrapolate 5000    # the default: an estimate, marked so

Servers are fake (Nova's fake hypervisor, no network port), made in batches with Nova's
min/max count, and deleted at the end unless ``--keep``. The sandbox is started when it is
not up, and stopped again afterwards in that case.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visa.clouds.base import VISA_TAG
from visa.clouds.openstack import OpenStackProvider
from visa.instances.models import InstanceState

SANDBOX = Path(__file__).resolve().parents[1] / "deploy" / "openstack-sandbox" / "sandbox.py"
PREFIX = "bench-sync"
BATCH = 100
# Per-instance polling is measured on at most this many servers, then scaled.
MAX_GET_SAMPLE = 1000


@dataclass
class Row:
    servers: int
    list_calls: float
    list_seconds: float
    get_calls: float
    get_seconds: float
    measured: bool
    get_sampled: int = 0


def sandbox(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SANDBOX), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def compute_calls(provider: OpenStackProvider) -> int:
    return provider.http_calls["127.0.0.1:8774"]


def bench_servers(provider: OpenStackProvider) -> list[Any]:
    return [s for s in provider.list_servers() if s.name.startswith(PREFIX)]


def grow_to(provider: OpenStackProvider, target: int) -> None:
    """Create bench servers in batches until ``target`` exist, then wait for them to settle."""
    conn = provider.conn
    image = conn.image.find_image("visa-sandbox-image").id
    flavour = conn.compute.find_flavor("visa.tiny").id
    have = len(bench_servers(provider))
    started = time.monotonic()
    while have < target:
        count = min(BATCH, target - have)
        conn.compute.create_server(
            name=PREFIX,
            image_id=image,
            flavor_id=flavour,
            networks="none",
            tags=[VISA_TAG],
            metadata={VISA_TAG: "bench"},
            min_count=count,
            max_count=count,
        )
        have += count
    while True:
        servers = bench_servers(provider)
        building = sum(s.state is InstanceState.BUILDING for s in servers)
        if len(servers) >= target and not building:
            break
        print(
            f"  {len(servers) - building}/{target} built ({time.monotonic() - started:.0f} s)",
            file=sys.stderr,
        )
        time.sleep(10)
    failed = sum(s.state is InstanceState.ERROR for s in servers)
    print(
        f"  {target} servers ready in {time.monotonic() - started:.0f} s ({failed} in ERROR)", file=sys.stderr
    )


def measure(provider: OpenStackProvider, size: int, repeats: int = 3) -> Row:
    provider.list_servers()  # authentication and discovery are not part of a sync
    calls, seconds = [], []
    for _ in range(repeats):
        before, t0 = compute_calls(provider), time.perf_counter()
        servers = provider.list_servers()
        seconds.append(time.perf_counter() - t0)
        calls.append(compute_calls(provider) - before)
    ids = [s.id for s in servers if s.name.startswith(PREFIX)]
    sample = ids[:MAX_GET_SAMPLE]
    before, t0 = compute_calls(provider), time.perf_counter()
    for server_id in sample:
        provider.get(server_id)
    get_seconds = time.perf_counter() - t0
    get_calls = compute_calls(provider) - before
    scale = len(ids) / len(sample)
    return Row(
        servers=len(servers),
        list_calls=statistics.median(calls),
        list_seconds=statistics.median(seconds),
        get_calls=get_calls * scale,
        get_seconds=get_seconds * scale,
        measured=True,
        get_sampled=len(sample),
    )


def extrapolate(base: Row, size: int, page: int) -> Row:
    """Linear in servers; list pages as Nova makes them (a full last page costs one more)."""
    per_server_list = base.list_seconds / base.servers
    per_get = base.get_seconds / base.get_calls
    return Row(
        servers=size,
        list_calls=size // page + 1,
        list_seconds=per_server_list * size,
        get_calls=size,
        get_seconds=per_get * size,
        measured=False,
    )


def table(rows: list[Row]) -> str:
    head = (
        f"{'servers':>8} | {'list: calls':>11} {'wall s':>8} | {'GET each: calls':>15} {'wall s':>8} "
        f"| {'calls ratio':>11} {'time ratio':>10} | how"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.measured:
            how = (
                "measured"
                if r.get_sampled >= r.servers
                else f"measured (GETs: {r.get_sampled} timed, scaled)"
            )
        else:
            how = "extrapolated from the largest measured size"
        lines.append(
            f"{r.servers:>8,} | {r.list_calls:>11,.0f} {r.list_seconds:>8.2f} | {r.get_calls:>15,.0f} "
            f"{r.get_seconds:>8.2f} | {r.get_calls / r.list_calls:>10,.0f}x {r.get_seconds / r.list_seconds:>9,.0f}x "
            f"| {how}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000", help="server counts to measure, ascending")
    parser.add_argument("--extrapolate", default="5000", help="server counts to estimate ('' for none)")
    parser.add_argument("--keep", action="store_true", help="leave the bench servers in the sandbox")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    estimates = [int(s) for s in args.extrapolate.split(",") if s and int(s) > max(sizes)]

    was_up = sandbox("status").returncode == 0
    if not was_up:
        print("starting the OpenStack sandbox ...", file=sys.stderr)
        started = sandbox("start")
        if started.returncode != 0:
            print(started.stderr[-3000:], file=sys.stderr)
            return 1
    provider = OpenStackProvider("sandbox", json.loads(sandbox("credentials", "--json").stdout))
    rows: list[Row] = []
    try:
        for size in sizes:
            print(f"growing to {size} bench servers ...", file=sys.stderr)
            grow_to(provider, size)
            rows.append(measure(provider, size))
        page = 1000  # the sandbox's Nova page size ([api] max_limit)
        rows.extend(extrapolate(rows[-1], size, page) for size in estimates)
        others = rows[0].servers - sizes[0]
        print()
        print(f"One sync of the sandbox's tagged servers (bench servers + {max(others, 0)} others):")
        print(table(rows))
        if estimates:
            print(
                f"Estimates assume list time grows linearly per server and Nova pages of {page}; "
                f"wall times are on {_cores()} shared cores."
            )
    finally:
        if not args.keep:
            print("deleting the bench servers ...", file=sys.stderr)
            for server in bench_servers(provider):
                provider.delete(server.id)
            deadline = time.monotonic() + 900
            while not was_up and bench_servers(provider) and time.monotonic() < deadline:
                time.sleep(5)  # let Nova finish before the sandbox stops
        provider.close()
        if not was_up:
            sandbox("stop")
    return 0


def _cores() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
