"""One LISTEN connection per process (visa.pubsub) on a real PostgreSQL: what a committed
transaction sends arrives, a rolled-back one's never does, and a lost connection is made
again with a "read it all again" (``None``) to every callback."""

from __future__ import annotations

import queue

import pytest
from sqlalchemy import create_engine

from visa import pubsub

pytestmark = pytest.mark.integration


def _next(q: queue.Queue, timeout: float = 5.0):
    return q.get(timeout=timeout)


def test_notifications_arrive_at_commit_only_and_survive_a_lost_connection(pg_database_url: str) -> None:
    listener = pubsub.Listener(pg_database_url, backoff=0.1).start()
    got: queue.Queue = queue.Queue()
    listener.subscribe(pubsub.EVENTS, got.put)
    engine = create_engine(pg_database_url)
    try:
        assert pubsub.wait_connected(listener)
        with engine.connect() as conn:
            with conn.begin() as tx:
                pubsub.send(conn, pubsub.EVENTS, "i1")
                tx.rollback()  # never delivered
            with conn.begin():
                pubsub.send(conn, pubsub.EVENTS, "i2,u3")
        assert _next(got) == "i2,u3"
        assert got.empty()

        listener.interrupt()  # the connection drops (a restart of PostgreSQL, a network cut)
        assert _next(got) is None  # reconnected: whatever was sent meanwhile is read again
        assert listener.connections == 2
        with engine.begin() as conn:
            pubsub.send(conn, pubsub.EVENTS, "i4")
        assert _next(got) == "i4"
    finally:
        listener.stop()
        engine.dispose()


def test_payloads_are_cut_under_postgresql_s_limit() -> None:
    keys = [f"i{n}" for n in range(5000)]
    parts = pubsub.chunks(keys)
    assert len(parts) > 1 and all(len(p) <= pubsub.PAYLOAD_LIMIT for p in parts)
    assert ",".join(parts).split(",") == keys
