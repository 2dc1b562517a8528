"""A web replica that stops (SIGTERM) answers every request it took and takes no new one: a
client sees either its answer or a refused connection, never a connection closed after its
request was written (what nginx turns into a 502 it may not retry for a POST)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from tests.processes import free_port, wait_port
from visa.serving import refuse_new_connections

pytestmark = pytest.mark.integration

# A gunicorn of `visa web`'s own kind (serve_web: its arbiter and DrainingThreadWorker), serving
# a Flask app that answers POSTs: the draining is the server's, not the app's.
SERVER = """
import sys
from flask import Flask
from visa.serving import serve_web

def load():
    app = Flask("drain")
    app.add_url_rule("/", "post", lambda: "done", methods=["POST"])
    return app

serve_web(f"127.0.0.1:{sys.argv[1]}", workers=2, threads=4, forwarded_allow_ips="127.0.0.1",
          options={"graceful_timeout": 10, "loglevel": "warning"}, load=load)
"""
REQUEST = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"


def _post(port: int) -> str:
    """One request on a new connection, as nginx sends one to a replica: its outcome."""
    try:
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
    except (ConnectionRefusedError, TimeoutError):
        return "refused"  # nothing was sent: nginx passes it to another replica
    with conn:
        try:
            conn.sendall(REQUEST)
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
        except OSError:
            return "lost"
    return "answered" if answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"done") else "lost"


def test_a_listener_refusing_new_connections_still_hands_over_those_it_completed() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        address = listener.getsockname()
        before = socket.create_connection(address, timeout=2)  # completed, waiting in the backlog
        assert refuse_new_connections(listener)
        with pytest.raises(TimeoutError):  # the SYN is dropped: no connection, nothing to reset
            socket.create_connection(address, timeout=0.5)
        accepted, _ = listener.accept()
        with before, accepted:
            before.sendall(b"ping")
            assert accepted.recv(4) == b"ping"
    with pytest.raises(ConnectionRefusedError):  # closed: refused at once
        socket.create_connection(address, timeout=2)


def test_a_stopping_replica_answers_or_refuses_every_request() -> None:
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    for _ in range(5):  # the race it closes is narrow: a few stops under a steady stream of requests
        port = free_port()
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
        try:
            wait_port(port, server)
            stopped = threading.Event()

            def client(port: int, stopped: threading.Event) -> None:
                while not stopped.is_set():
                    outcome = _post(port)
                    with lock:
                        outcomes[outcome] += 1

            threads = [threading.Thread(target=client, args=(port, stopped)) for _ in range(8)]
            for t in threads:
                t.start()
            time.sleep(1)
            server.send_signal(signal.SIGTERM)
            assert server.wait(30) == 0
            time.sleep(0.5)  # requests to the closed port are refused
            stopped.set()
            for t in threads:
                t.join()
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    assert outcomes["lost"] == 0, outcomes
    assert outcomes["answered"] > 100 and outcomes["refused"] > 0, outcomes
