"""A user-space link shaper: a TCP proxy that gives each direction a bandwidth and a delay.

    python -m bench.shaper LISTEN_PORT TARGET_HOST:TARGET_PORT --mbit 20 --delay-ms 40

The kernel's netem is not available everywhere (containers, shared machines), and a
benchmark of a remote desktop means nothing on loopback. Each direction of each
connection is modelled as a link: bytes leave at ``rate`` (serialisation, a token bucket
with a one-piece burst) and arrive ``delay`` later (propagation). Bytes are cut into
pieces of at most ``PIECE`` so a large read does not arrive as one lump; reading stops
while more than ``queue_limit`` bytes are in flight (a router's queue), which pushes back
on the sender as a real link does.

``Shaper`` runs in the caller's event loop; ``ShaperProcess`` runs one in a child process
(so the shaper's timing is not disturbed by the benchmark's own work) and shares its byte
counters through shared memory.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import multiprocessing
import multiprocessing.sharedctypes
import socket
import time
from dataclasses import dataclass

PIECE = 16 * 1024


@dataclass(frozen=True)
class Link:
    """One direction: ``rate`` in bytes per second, one-way ``delay`` in seconds."""

    rate: float
    delay: float

    @classmethod
    def of(cls, mbit: float, delay_ms: float) -> Link:
        return cls(rate=mbit * 1e6 / 8, delay=delay_ms / 1000)

    @property
    def queue_limit(self) -> int:
        # A bandwidth-delay product plus some slack, as a router buffers.
        return int(self.rate * self.delay * 2) + 256 * 1024


@dataclass(frozen=True)
class Profile:
    name: str
    mbit: float
    delay_ms: float

    @property
    def link(self) -> Link:
        return Link.of(self.mbit, self.delay_ms)

    def __str__(self) -> str:
        rate = f"{self.mbit / 1000:g} Gbit/s" if self.mbit >= 1000 else f"{self.mbit:g} Mbit/s"
        return f"{self.name} ({rate}, {self.delay_ms:g} ms)"


PROFILES = {
    "lan": Profile("LAN", 1000, 1),
    "wifi": Profile("facility Wi-Fi", 50, 10),
    "home": Profile("home", 20, 40),
    "poor": Profile("poor", 5, 100),
}


class _Direction:
    """Bytes read from ``reader`` arrive at ``writer`` as over ``link``."""

    def __init__(self, link: Link, count: list[int], index: int) -> None:
        self.link = link
        self.count = count
        self.index = index
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.in_flight = 0
        self.free = 0.0  # when the link finishes sending what it has (the bucket's clock)
        self.more = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.eof = False

    async def read(self, reader: asyncio.StreamReader) -> None:
        link = self.link
        try:
            while data := await reader.read(256 * 1024):
                for start in range(0, len(data), PIECE):
                    piece = data[start : start + PIECE]
                    now = time.monotonic()
                    self.free = max(self.free, now) + len(piece) / link.rate
                    self.queue.append((self.free + link.delay, piece))
                    self.in_flight += len(piece)
                self.more.set()
                if self.in_flight > link.queue_limit:
                    self.room.clear()
                    await self.room.wait()
        except ConnectionError:
            pass
        finally:
            self.eof = True
            self.more.set()

    async def write(self, writer: asyncio.StreamWriter) -> None:
        queue = self.queue
        try:
            while True:
                if not queue:
                    if self.eof:
                        break
                    self.more.clear()
                    await self.more.wait()
                    continue
                due, _ = queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                now = time.monotonic()
                sent = 0
                while queue and queue[0][0] <= now:
                    _, piece = queue.popleft()
                    writer.write(piece)
                    sent += len(piece)
                self.in_flight -= sent
                self.count[self.index] += sent
                if self.in_flight <= self.link.queue_limit:
                    self.room.set()
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except ConnectionError:
            pass


class Shaper:
    """Listens on ``port`` and relays each connection to ``target`` over two links."""

    def __init__(
        self, port: int, target: tuple[str, int], up: Link, down: Link, count: list[int] | None = None
    ) -> None:
        self.port = port
        self.target = target
        self.up, self.down = up, down  # up: client -> target
        # bytes delivered: [client -> target, target -> client]
        self.count: list[int] = count if count is not None else [0, 0]
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port, backlog=512)
        if self.port == 0:
            self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()

    async def _client(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            t_reader, t_writer = await asyncio.open_connection(*self.target)
        except OSError:
            c_writer.close()
            return
        for w in (c_writer, t_writer):
            sock = w.get_extra_info("socket")
            if sock is not None:  # the link's timing is ours; the kernel must not add its own
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up, down = _Direction(self.up, self.count, 0), _Direction(self.down, self.count, 1)
        tasks = [
            asyncio.create_task(up.read(c_reader)),
            asyncio.create_task(up.write(t_writer)),
            asyncio.create_task(down.read(t_reader)),
            asyncio.create_task(down.write(c_writer)),
        ]
        try:
            # Done when both directions have delivered their last byte.
            await asyncio.gather(tasks[1], tasks[3], return_exceptions=True)
        finally:
            for task in tasks:
                task.cancel()
            for w in (c_writer, t_writer):
                w.close()


def _serve(port: int, target: tuple[str, int], up: Link, down: Link, count, ready) -> None:
    async def main() -> None:
        shaper = Shaper(port, target, up, down, count)
        await shaper.start()
        ready.set()
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


class ShaperProcess:
    """A ``Shaper`` in a child process; ``bytes`` reads its counters without stopping it."""

    def __init__(self, port: int, target: tuple[str, int], up: Link, down: Link | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.port = port
        self._count = ctx.Array("q", 2, lock=False)
        ready = ctx.Event()
        self._proc = ctx.Process(
            target=_serve, args=(port, target, up, down or up, self._count, ready), daemon=True
        )
        self._proc.start()
        if not ready.wait(30):
            self.close()
            raise RuntimeError("the shaper did not start")

    @property
    def bytes(self) -> tuple[int, int]:
        """Delivered so far: (client -> target, target -> client)."""
        return self._count[0], self._count[1]

    def close(self) -> None:
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("port", type=int)
    parser.add_argument("target", help="host:port")
    parser.add_argument("--mbit", type=float, required=True, help="bandwidth of each direction")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    link = Link.of(args.mbit, args.delay_ms)
    _serve(args.port, (host, int(port)), link, link, [0, 0], multiprocessing.Event())


if __name__ == "__main__":
    main()
