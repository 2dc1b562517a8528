"""Request bodies are read on the event loop, within a deadline and a size cap, before a WSGI
thread is given to the request: clients that send their bodies a byte at a time (slow loris)
cannot take every thread of `visa run` and starve the pages of everyone else, before any login."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from visa.asgi import WEB_WORKERS, build_asgi

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def served(app, committed_db, request) -> Iterator[str]:
    """The embedded web process (the ASGI app of `visa run`), served by uvicorn in a thread; its
    body deadline 3 s, or the fixture's parameter."""
    settings = app.extensions["visa"].settings
    settings.request_body_seconds = getattr(request, "param", 3)
    settings.transfers.timeout_seconds = 2

    # Where uploads are (files_api): a route that reads its body as an upload does (a GET:
    # no CSRF token to bring).
    @app.get("/api/instances/<uid>/files/echo")
    def echo(uid: str):
        from flask import request

        return {"received": len(request.stream.read())}

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_asgi(app, gateway=False), log_level="warning", lifespan="off",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _slow_client(port: int, path: str, stop: threading.Event, length: int = 10_000, method: str = "POST") -> None:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {length}\r\n\r\n".encode())
        while not stop.wait(0.2):
            s.sendall(b" ")


def _raw(port: int, request: bytes, timeout: float = 10) -> tuple[int, dict]:
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused before the end
            s.sendall(request)
        with contextlib.suppress(ConnectionResetError):
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body.split(b"\r\n")[-1] if b"\r\n" in body else body)


# A body deadline far beyond the page's timeout: a page that waited for a thread would wait for
# the slow bodies to end, and its request would time out (no figure of speed is asserted).
@pytest.mark.parametrize("served", [60], indirect=True)
def test_slow_bodies_do_not_starve_the_login_page(served: str) -> None:
    port = int(served.rsplit(":", 1)[1])
    stop = threading.Event()
    clients = [threading.Thread(target=_slow_client, args=(port, path, stop), daemon=True)
               for path in ("/api/login", "/login") * WEB_WORKERS]  # twice as many as the threads
    for c in clients:
        c.start()
    try:
        time.sleep(1)  # every one of them has begun its body
        for _ in range(3):
            r = httpx.get(f"{served}/login", timeout=15, trust_env=False)
            assert r.status_code == 200
        assert all(c.is_alive() for c in clients)  # served while every slow body was still coming
    finally:
        stop.set()
        for c in clients:
            c.join(10)


def test_slow_transfers_take_threads_of_their_own(served: str) -> None:
    port = int(served.rsplit(":", 1)[1])
    stop = threading.Event()
    # Transfer bodies are streamed (gigabytes): slow ones hold the transfer threads...
    clients = [threading.Thread(target=_slow_client, args=(port, "/api/instances/x/files/echo", stop, 10_000, "GET"),
                                daemon=True)
               for _ in range(WEB_WORKERS * 2)]
    for c in clients:
        c.start()
    try:
        time.sleep(1)
        for _ in range(3):  # ...and never those of the pages (the slow bodies never end by themselves)
            assert httpx.get(f"{served}/login", timeout=15, trust_env=False).status_code == 200
        assert all(c.is_alive() for c in clients)
    finally:
        stop.set()
        for c in clients:
            c.join(10)
    # A transfer body silent longer than transfers.timeout_seconds (2 s here) ends there: the
    # body is short of its length, an error the upload answers with how far it got.
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"GET /api/instances/x/files/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        start = time.monotonic()
        answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 400"), answer
        assert 1.5 < time.monotonic() - start < 8


def test_a_body_too_slow_or_too_large_is_refused(served: str, app) -> None:
    port = int(served.rsplit(":", 1)[1])
    cap = app.extensions["visa"].settings.max_request_bytes
    # Declared over the cap: refused before a byte of it is read.
    status, body = _raw(port, f"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              f"Content-Length: {cap + 1}\r\n\r\n{{".encode())
    assert status == 413 and body["error"], body
    # Chunked, with no length said: refused once past the cap.
    chunk = b"a" * 65536
    request = b"POST /api/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    request += (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * (cap // len(chunk) + 2)
    status, body = _raw(port, request)
    assert status == 413 and body["error"], body
    # A body that does not arrive within the deadline (3 s here).
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        start = time.monotonic()
        answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert 2 < time.monotonic() - start < 8
        assert b'"error"' in answer
