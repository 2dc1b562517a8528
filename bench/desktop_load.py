"""Many streaming desktops through one relay: the latency a relay adds when it is busy.

    python -m bench.desktop_load [--desktops 50] [--seconds 10] [--kbps 400]

Each desktop is a small RFB server (VncAuth, then ``--kbps`` KB/s of framebuffer-update-sized
messages, 30 a second) that answers a client's ClientCutText at once with a ServerCutText of
the same bytes. Every client sends such a ping every 100 ms while its desktop streams; the
round trip is the queueing a relay adds behind the other desktops' frames (and its own). The
peers, one after the other on the same backend, in one run: raw TCP (the floor), websockify
(a process per connection), visa as it was (``--baseline-ref``) and this tree's gateway (one
process for all).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.gateway import (
    PASSWORD,
    SERVER_INIT,
    Buffered,
    TcpConn,
    WsConn,
    _ws,
    prepare_database,
    rfb_client_handshake,
)
from tests.processes import free_port, wait_port

ROOT = Path(__file__).resolve().parents[1]
FPS = 30


async def _desktop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, kbps: int) -> None:
    from visa.gateway.rfb import vnc_auth_response

    try:
        writer.write(b"RFB 003.008\n")
        await reader.readexactly(12)
        writer.write(bytes([1, 2]))
        await reader.readexactly(1)
        challenge = secrets.token_bytes(16)
        writer.write(challenge)
        if await reader.readexactly(16) != vnc_auth_response(PASSWORD, challenge):
            return
        writer.write(struct.pack(">I", 0))
        await reader.readexactly(1)
        writer.write(SERVER_INIT)

        async def stream() -> None:
            size = kbps * 1024 // FPS
            frame = struct.pack(">BxH", 0, 1) + b"\x5a" * (size - 4)  # one opaque "update"
            start = time.monotonic()
            n = 0
            while True:
                n += 1
                writer.write(frame)
                await writer.drain()
                await asyncio.sleep(max(0, start + n / FPS - time.monotonic()))

        streaming = asyncio.create_task(stream())
        try:
            while True:
                head = await reader.readexactly(8)
                text = await reader.readexactly(struct.unpack(">I", head[4:])[0])
                writer.write(struct.pack(">BxxxI", 3, len(text)) + text)  # echo as ServerCutText
        finally:
            streaming.cancel()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def serve_desktops(port: int, kbps: int) -> None:
    async def main() -> None:
        server = await asyncio.start_server(
            lambda r, w: _desktop(r, w, kbps), "127.0.0.1", port, backlog=1024
        )
        async with server:
            await server.serve_forever()

    asyncio.run(main())


async def _client(b: Buffered, seconds: float, rtts: list[float], frame: int) -> None:
    """Pings every 100 ms while reading the stream; a ping's echo is found among the frames."""
    sent: dict[bytes, float] = {}

    async def reader() -> None:
        while True:
            kind = (await b.read(1))[0]
            if kind == 0:
                await b.read(frame - 1)
            elif kind == 3:
                head = await b.read(7)
                text = await b.read(struct.unpack(">I", head[3:])[0])
                if text in sent:
                    rtts.append((time.perf_counter() - sent.pop(text)) * 1000)
            else:
                raise RuntimeError(f"unexpected message {kind}")

    task = asyncio.create_task(reader())
    end = time.monotonic() + seconds
    await asyncio.sleep(0.1 * secrets.randbelow(10) / 10)
    i = 0
    while time.monotonic() < end and not task.done():
        key = b"ping%08d" % i
        i += 1
        sent[key] = time.perf_counter()
        await b.conn.send(struct.pack(">BxxxI", 6, len(key)) + key)
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    task.cancel()
    await b.conn.close()


def _pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))] if v else float("nan")


async def run(args: argparse.Namespace) -> list[tuple[str, list[float]]]:
    from bench.desktop import _baseline_tree, _stop

    websockify = shutil.which("websockify") or str(Path(sys.executable).parent / "websockify")
    tmp = Path(tempfile.mkdtemp(prefix="visa-bench-load-"))
    procs: list[subprocess.Popen] = []

    def start(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        procs.append(proc)
        return proc

    try:
        backend_port = free_port()
        backend = start(
            [sys.executable, "-m", "bench.desktop_load", "backend", str(backend_port), str(args.kbps)]
        )
        wait_port(backend_port, backend)
        database_url = f"sqlite:///{tmp / 'load.db'}"
        uid, tokens = prepare_database(database_url, backend_port, 2 * args.desktops + 4)
        (tmp / "web").mkdir()
        ws_port, base_port, tuned_port = free_port(), free_port(), free_port()
        wsfy = start([websockify, f"127.0.0.1:{ws_port}", f"127.0.0.1:{backend_port}"])
        base_tree = _baseline_tree(args.baseline_ref, tmp / "baseline")
        gws = []
        for port, tree in ((base_port, base_tree), (tuned_port, None)):
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (tree, ROOT) if p)}
            gws.append(
                start(
                    [
                        sys.executable,
                        "-m",
                        "bench.desktop",
                        "gateway",
                        database_url,
                        str(tmp),
                        str(port),
                        "http://127.0.0.1",
                    ],
                    env,
                )
            )
        for proc, port in ((wsfy, ws_port), (gws[0], base_port), (gws[1], tuned_port)):
            wait_port(port, proc)
        frame = args.kbps * 1024 // FPS

        async def raw() -> Buffered:
            r, w = await asyncio.open_connection("127.0.0.1", backend_port)
            return await rfb_client_handshake(TcpConn(r, w), PASSWORD)

        async def wsfy_open() -> Buffered:
            return await rfb_client_handshake(WsConn(await _ws(f"ws://127.0.0.1:{ws_port}/")), PASSWORD)

        def gateway(port: int):
            async def open_() -> Buffered:
                url = f"ws://127.0.0.1:{port}/ws/desktop/{uid}?token={tokens.pop()}"
                return await rfb_client_handshake(WsConn(await _ws(url)), None)

            return open_

        peers = [
            ("raw TCP (no relay)", raw),
            ("websockify (a process per desktop)", wsfy_open),
            ("visa as it was", gateway(base_port)),
            ("visa tuned", gateway(tuned_port)),
        ]
        out = []
        for name, open_ in peers:
            print(f"  {args.desktops} desktops through {name}", file=sys.stderr, flush=True)
            conns = [await open_() for _ in range(args.desktops)]
            rtts: list[float] = []
            await asyncio.gather(*(_client(b, args.seconds, rtts, frame) for b in conns))
            out.append((name, rtts))
        return out
    finally:
        for proc in procs:
            _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def report(results: list[tuple[str, list[float]]], args: argparse.Namespace) -> None:
    floor = _pct(results[0][1], 0.99)
    print(
        f"\n{args.desktops} desktops streaming {args.kbps} KB/s each ({FPS} updates/s) through one relay, "
        f"a ping every 100 ms on each for {args.seconds:g} s; loopback, {os.cpu_count()} CPUs, shared and busy."
    )
    print("| relay | pings | round trip p50 / p99 (ms) | added p99 vs raw TCP (ms) |")
    print("|---|---|---|---|")
    for name, rtts in results:
        added = _pct(rtts, 0.99) - floor
        print(f"| {name} | {len(rtts)} | {_pct(rtts, 0.5):.1f} / {_pct(rtts, 0.99):.1f} | {added:+.1f} |")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "backend":
        serve_desktops(int(sys.argv[2]), int(sys.argv[3]))
        return
    from bench.desktop import BASELINE_REF

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--desktops", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--kbps", type=int, default=400, help="KB/s each desktop streams")
    parser.add_argument("--baseline-ref", default=BASELINE_REF)
    args = parser.parse_args()
    report(asyncio.run(run(args)), args)


if __name__ == "__main__":
    main()
