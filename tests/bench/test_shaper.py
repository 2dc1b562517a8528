"""The link shaper of the desktop benchmark, measured against known transfers.

These time the instrument itself (the bench's figures are only as true as its links), not
the code under test: a link can never be faster than its rate and delay allow, and on a
busy machine it may be somewhat slower, hence a strict floor and a loose ceiling.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from bench.shaper import Link, Shaper


async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Counts what it gets and answers the total at the end; echoes lines starting with 'p'."""
    total = 0
    while data := await reader.read(65536):
        if data.startswith(b"p"):
            writer.write(data)
            await writer.drain()
            continue
        total += len(data)
    writer.write(str(total).encode())
    await writer.drain()
    writer.close()


async def _with_shaper(link: Link, body):
    server = await asyncio.start_server(_sink, "127.0.0.1", 0)
    shaper = Shaper(0, ("127.0.0.1", server.sockets[0].getsockname()[1]), link, link)
    await shaper.start()
    try:
        return await body(shaper)
    finally:
        await shaper.close()
        server.close()


def test_a_transfer_takes_size_over_rate_plus_the_delay() -> None:
    size = 1_000_000
    link = Link.of(mbit=20, delay_ms=40)  # 2.5 MB/s: 0.4 s of sending, then 40 ms of flight

    async def body(shaper: Shaper) -> tuple[float, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", shaper.port)
        start = time.monotonic()
        writer.write(b"x" * size)  # the first byte is no 'p': counted, not echoed
        writer.write_eof()
        answer = await reader.read()
        return time.monotonic() - start, answer

    elapsed, answer = asyncio.run(_with_shaper(link, body))
    assert answer == str(size).encode()
    # The answer comes back over the link too: one more delay (its few bytes take no time).
    expected = size / link.rate + 2 * link.delay
    assert elapsed >= expected - 0.01, (elapsed, expected)
    assert elapsed <= expected * 1.3 + 0.05, (elapsed, expected)


def test_a_small_round_trip_takes_twice_the_delay() -> None:
    link = Link.of(mbit=1000, delay_ms=25)

    async def body(shaper: Shaper) -> list[float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", shaper.port)
        times = []
        for _ in range(15):
            start = time.monotonic()
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            times.append(time.monotonic() - start)
        writer.close()
        return times

    times = asyncio.run(_with_shaper(link, body))
    assert min(times) >= 2 * link.delay - 0.002, times
    assert statistics.median(times) <= 2 * link.delay + 0.015, times


def test_the_rate_holds_over_a_long_transfer_and_counts_the_bytes() -> None:
    size = 4_000_000
    link = Link.of(mbit=80, delay_ms=1)  # 10 MB/s

    async def body(shaper: Shaper) -> tuple[float, list[int]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", shaper.port)
        start = time.monotonic()
        for _ in range(size // 100_000):
            writer.write(b"y" * 100_000)
            await writer.drain()
        writer.write_eof()
        assert await reader.read() == str(size).encode()
        return time.monotonic() - start, list(shaper.count)

    elapsed, count = asyncio.run(_with_shaper(link, body))
    rate = size / elapsed
    assert rate <= link.rate * 1.02, rate
    assert rate >= link.rate * 0.75, rate
    assert count == [size, len(str(size))]
