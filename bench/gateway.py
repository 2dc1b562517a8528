"""The desktop gateway beside websockify, relaying the same VNC-like backend in one run.

    python -m bench.gateway [--mb 256] [--round-trips 2000] [--connections 200] [--repeat 3]

What is compared, all on loopback, one process each:

* ``backend``: a small RFB server (VncAuth, then a "command" in a ClientCutText message:
  stream N bytes / echo / idle). It speaks just enough RFB for both relays.
* ``raw TCP``: the bench client straight to the backend (the limit).
* ``websockify``: websockify 0.13 in front of the backend (a forked process per
  connection); the client does VncAuth itself, as noVNC with a password would.
* ``visa gateway``: uvicorn serving the gateway routes with the visa Flask app behind them,
  on a throw-away SQLite database. Every connection spends a real one-time token, the gateway
  does VncAuth with the backend and offers the client security None, then relays; client
  messages go through the RFB filter (an owner's: nothing dropped).

Measures: one stream of ``--mb`` MB (median of ``--repeat`` runs, MB/s); round trips of
100-byte messages (p50/p99; the handshake is not timed); memory per open idle connection
at ``--connections`` connections (RSS delta of the relay's processes / connections; PSS
too, which counts the pages websockify's forks share once).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.processes import free_port, wait_port

PASSWORD = "bench-Pw-123"
SERVER_INIT = struct.pack(">HH", 1024, 768) + struct.pack(
    ">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0
)
SERVER_INIT += struct.pack(">I", 5) + b"bench"
CHUNK = 256 * 1024
MB = 1024 * 1024


# ---------------------------------------------------------------- the backend


async def _backend_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    from visa.gateway.rfb import vnc_auth_response

    try:
        writer.write(b"RFB 003.008\n")
        await reader.readexactly(12)
        writer.write(bytes([1, 2]))
        await reader.readexactly(1)
        challenge = secrets.token_bytes(16)
        writer.write(challenge)
        if await reader.readexactly(16) != vnc_auth_response(PASSWORD, challenge):
            writer.write(struct.pack(">I", 1) + struct.pack(">I", 6) + b"denied")
            return
        writer.write(struct.pack(">I", 0))
        await reader.readexactly(1)
        writer.write(SERVER_INIT)
        head = await reader.readexactly(8)
        assert head[0] == 6, "the first message is a ClientCutText command"
        command = (await reader.readexactly(struct.unpack(">i", head[4:])[0])).decode()
        if command.startswith("stream "):
            left = int(command.split()[1])
            block = b"\x5a" * CHUNK
            while left > 0:
                writer.write(block if left >= CHUNK else block[:left])
                left -= CHUNK
                await writer.drain()
            await writer.drain()
        elif command == "echo":
            while data := await reader.read(65536):
                writer.write(data)
        else:  # idle until the client goes
            await reader.read()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def serve_backend(port: int) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_backend_client, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# ---------------------------------------------------------------- the gateway under test


def serve_gateway(database_url: str, data_dir: str, port: int) -> None:
    import uvicorn
    from a2wsgi import WSGIMiddleware
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from visa.gateway.routes import gateway_routes
    from visa.settings import Settings
    from visa.web.app import create_app

    settings = Settings(data_dir=Path(data_dir), database_url=database_url, secret_key="bench-secret")
    app = create_app(settings)
    # The same assembly as visa.asgi: gateway routes first, the Flask app for the rest.
    asgi = Starlette(routes=[*gateway_routes(app), Mount("/", app=WSGIMiddleware(app, workers=4))])
    ws = os.environ.get("BENCH_WS", "visa.gateway.wsprotocol:RelayWebSocketProtocol")
    uvicorn.run(
        asgi,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        ws_per_message_deflate=False,
        ws=ws,
    )


def prepare_database(database_url: str, backend_port: int, tokens: int) -> tuple[str, list[str]]:
    """A user owning an ACTIVE instance whose VNC is the backend, and one-time tokens."""
    from visa.actor import actor_for
    from visa.catalogue.models import Flavour, Image, ImageProtocol, Plan, Protocol
    from visa.clock import system_clock
    from visa.clouds.models import Cloud
    from visa.db import Database
    from visa.gateway.service import issue_connect_token
    from visa.instances.models import Instance, InstanceMember, InstanceState, MemberRole
    from visa.migrate import upgrade
    from visa.users.models import User

    database = Database(database_url)
    upgrade(database.engine)
    now = datetime.now(UTC)
    uid = "bench0000001"
    with database.unit_of_work() as s:
        user = User(username="bench", full_name="Bench", instance_quota=2, active=True, created_at=now)
        image = Image(
            name="desktop", environment="Desktop", version="1", cloud_image_ref="x", visible=True, options={}
        )
        image.protocols.append(ImageProtocol(protocol=Protocol.VNC, port=5901))
        flavour = Flavour(name="s", cores=1, memory_mb=1024, cloud_flavour_ref="s", gpu_count=0, visible=True)
        plan = Plan(image=image, flavour=flavour, preset=True, enabled=True)
        cloud = Cloud(name="local", kind="local", config={}, enabled=True, created_at=now)
        instance = Instance(
            uid=uid, name="bench", owner=user, plan=plan, cloud=cloud, state=InstanceState.ACTIVE,
            address="127.0.0.1", secret=PASSWORD, created_at=now, terminates_at=now + timedelta(days=1),
            provider_state={"ports": {"VNC": backend_port}},
        )  # fmt: skip
        instance.members = [InstanceMember(user=user, role=MemberRole.OWNER, created_at=now)]
        s.add(instance)
        s.flush()
        actor = actor_for(user, now)
        issued = [issue_connect_token(actor, s, system_clock, instance, 3600)[0] for _ in range(tokens)]
    database.dispose()
    return uid, issued


# ---------------------------------------------------------------- clients


class Conn:
    """One relayed (or direct) connection, after the RFB handshake."""

    async def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def recv(self) -> bytes:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class TcpConn(Conn):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def recv(self) -> bytes:
        data = await self.reader.read(1 << 20)
        if not data:
            raise ConnectionError("closed")
        return data

    async def close(self) -> None:
        self.writer.close()


class WsConn(Conn):
    def __init__(self, ws) -> None:
        self.ws = ws

    async def send(self, data: bytes) -> None:
        await self.ws.send(data)

    async def recv(self) -> bytes:
        return await self.ws.recv()  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.ws.close()


class Buffered:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.buf = bytearray()

    async def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += await self.conn.recv()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


async def rfb_client_handshake(conn: Conn, password: str | None) -> Buffered:
    """As noVNC: VncAuth when a password is given (direct, websockify), else security None."""
    from visa.gateway.rfb import vnc_auth_response

    b = Buffered(conn)
    await b.read(12)
    await conn.send(b"RFB 003.008\n")
    (count,) = await b.read(1)
    offered = await b.read(count)
    if password is None:
        assert offered == b"\x01", offered
        await conn.send(b"\x01")
    else:
        assert 2 in offered, offered
        await conn.send(b"\x02")
        await conn.send(vnc_auth_response(password, await b.read(16)))
    assert await b.read(4) == b"\0\0\0\0", "authentication failed"
    await conn.send(b"\x01")
    head = await b.read(24)
    await b.read(struct.unpack(">I", head[20:])[0])
    return b


def cut_text(text: bytes) -> bytes:
    return struct.pack(">BxxxI", 6, len(text)) + text


@dataclass
class Relay:
    name: str
    open: Callable[[], Awaitable[Buffered]]
    pids: Callable[[], list[int]]


async def _ws(url: str):
    from websockets.asyncio.client import connect

    return await connect(url, subprotocols=["binary"], compression=None, max_size=None, open_timeout=30)  # type: ignore[list-item]


# ---------------------------------------------------------------- measures


async def throughput(relay: Relay, size: int) -> float:
    b = await relay.open()
    await b.conn.send(cut_text(f"stream {size}".encode()))
    got = len(b.buf)
    start = time.perf_counter()
    while got < size:
        got += len(await b.conn.recv())
    elapsed = time.perf_counter() - start
    await b.conn.close()
    return size / MB / elapsed


async def latency(relay: Relay, round_trips: int) -> list[float]:
    """Round-trip times (us) of 100-byte messages echoed by the backend."""
    b = await relay.open()
    await b.conn.send(cut_text(b"echo"))
    message = cut_text(b"x" * 92)
    assert len(message) == 100
    times = []
    for i in range(round_trips + 50):
        start = time.perf_counter_ns()
        await b.conn.send(message)
        await b.read(100)
        if i >= 50:  # after a warm-up
            times.append((time.perf_counter_ns() - start) / 1000)
    await b.conn.close()
    return times


def _memory(pids: list[int]) -> tuple[int, int]:
    """RSS and PSS (bytes) of these processes."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
        except OSError:
            pass
    return rss, pss


def _children(pid: int) -> list[int]:
    out = [pid]
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


async def memory(relay: Relay, connections: int) -> tuple[float, float]:
    await asyncio.sleep(0.5)
    rss0, pss0 = _memory(relay.pids())
    opened = []
    for _ in range(connections):
        b = await relay.open()
        await b.conn.send(cut_text(b"idle"))
        opened.append(b)
    await asyncio.sleep(1.5)
    rss1, pss1 = _memory(relay.pids())
    for b in opened:
        await b.conn.close()
    return (rss1 - rss0) / connections, (pss1 - pss0) / connections


# ---------------------------------------------------------------- orchestration






async def run(args: argparse.Namespace) -> None:
    websockify = shutil.which("websockify") or str(Path(sys.executable).parent / "websockify")
    if not Path(websockify).exists():
        raise SystemExit("websockify is not installed: pip install -e '.[test]'")
    tmp = Path(tempfile.mkdtemp(prefix="visa-bench-"))
    procs: list[subprocess.Popen] = []

    def start(argv: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        procs.append(proc)
        return proc

    try:
        backend_port, ws_port, gw_port = free_port(), free_port(), free_port()
        backend = start([sys.executable, "-m", "bench.gateway", "backend", str(backend_port)])
        wait_port(backend_port, backend)
        database_url = f"sqlite:///{tmp / 'bench.db'}"
        needed = 2 * args.repeat + 4 + 4 + args.connections
        uid, tokens = prepare_database(database_url, backend_port, needed)
        wsfy = start([websockify, f"127.0.0.1:{ws_port}", f"127.0.0.1:{backend_port}"])
        gateway = start(
            [sys.executable, "-m", "bench.gateway", "gateway", database_url, str(tmp), str(gw_port)]
        )
        wait_port(ws_port, wsfy)
        wait_port(gw_port, gateway)

        async def open_raw() -> Buffered:
            reader, writer = await asyncio.open_connection("127.0.0.1", backend_port)
            return await rfb_client_handshake(TcpConn(reader, writer), PASSWORD)

        async def open_websockify() -> Buffered:
            return await rfb_client_handshake(WsConn(await _ws(f"ws://127.0.0.1:{ws_port}/")), PASSWORD)

        async def open_gateway() -> Buffered:
            url = f"ws://127.0.0.1:{gw_port}/ws/desktop/{uid}?token={tokens.pop()}"
            return await rfb_client_handshake(WsConn(await _ws(url)), None)

        relays = [
            Relay("raw TCP (the limit)", open_raw, lambda: []),
            Relay("websockify 0.13 (fork per connection)", open_websockify, lambda: _children(wsfy.pid)),
            Relay("visa gateway (uvicorn, asyncio)", open_gateway, lambda: [gateway.pid]),
        ]
        size = args.mb * MB
        # Interleaved, so that a burst of load from elsewhere on the machine hits every relay.
        rates: dict[str, list[float]] = {r.name: [] for r in relays}
        times: dict[str, list[float]] = {r.name: [] for r in relays}
        for relay in relays:
            await throughput(relay, 8 * MB)  # warm-up
        for _ in range(args.repeat):
            for relay in relays:
                rates[relay.name].append(await throughput(relay, size))
        print("  throughput measured", file=sys.stderr)
        blocks = 4
        for _ in range(blocks):
            for relay in relays:
                times[relay.name] += await latency(relay, args.round_trips // blocks)
        print("  latency measured", file=sys.stderr)
        rows = []
        for relay in relays:
            mem = await memory(relay, args.connections) if relay is not relays[0] else None
            t = sorted(times[relay.name])
            rows.append((relay.name, rates[relay.name], t[len(t) // 2], t[int(len(t) * 0.99)], mem))
        print("  memory measured", file=sys.stderr)

        print(
            f"\nOne stream of {args.mb} MB (median of {args.repeat}), {args.round_trips} round trips of 100 B, "
            f"{args.connections} open idle connections; same backend, same run, loopback; {os.cpu_count()} CPUs, shared."
        )
        header = f"| {'relay':<40} | {'MB/s':>16} | {'p50 / p99 round trip (us)':>26} | {'RSS / PSS per connection':>25} |"
        print(header)
        print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
        for name, rates, p50, p99, mem in rows:
            rate = f"{statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f})"
            lat = f"{p50:,.0f} / {p99:,.0f}"
            m = "-" if mem is None else f"{mem[0] / 1024:,.0f} KB / {mem[1] / 1024:,.0f} KB"
            print(f"| {name:<40} | {rate:>16} | {lat:>26} | {m:>25} |")
        print(
            "\nThe gateway's figures include its work per connection: spending a token in the database,"
            " VncAuth towards the backend, the RFB filter on client messages."
        )
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "backend":
        serve_backend(int(sys.argv[2]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "gateway":
        serve_gateway(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
