"""How visa's processes are served.

The gateway (``visa gateway``: the desktop relay, the instances' web proxies and the event
streams, all long-lived connections on an event loop) and the embedded setup (``visa run``)
are ASGI, with the same uvicorn options under uvicorn and gunicorn, those the gateway
benchmark (bench/gateway.py) measures. The web role of a multi-process deployment
(``visa web``: pages and REST API, short requests) is plain WSGI under gunicorn's threaded
workers, with no ASGI bridge in between (bench/api_latency.py compares the two).

* ``UVICORN_OPTIONS``: the relay's tuned websocket protocol, no per-message deflate (large
  framebuffer updates are written without a copy only then), a short graceful shutdown
  (event streams end on their own; a restart must not wait for them).
* ``RelayUvicornWorker``: gunicorn's worker class for production
  (``gunicorn -k visa.serving.RelayUvicornWorker``), from the ``uvicorn-worker`` package that
  replaces the deprecated ``uvicorn.workers``.
* ``serve_web``: ``visa web``, gunicorn's gthread workers (``DrainingThreadWorker``) serving
  ``create_wsgi_app()``.
  SIGTERM drains (the listening socket first stops taking connections, then what the kernel
  completed is served and the socket closes; accepted requests finish within
  ``graceful_timeout``), SIGHUP replaces the workers without closing the socket: a rolling
  restart behind nginx loses no request.
"""

from __future__ import annotations

import ctypes
import gc
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from visa.settings import Settings

UVICORN_OPTIONS: dict[str, Any] = {
    "ws": "visa.gateway.wsprotocol:RelayWebSocketProtocol",
    "ws_per_message_deflate": False,
    "timeout_graceful_shutdown": 5,
}

try:
    from uvicorn_worker import UvicornWorker
except ImportError:  # gunicorn and uvicorn-worker come with the "deploy" extra only
    UvicornWorker = None  # type: ignore[assignment,misc]

if UvicornWorker is not None:

    class RelayUvicornWorker(UvicornWorker):  # type: ignore[misc,valid-type]
        CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, **UVICORN_OPTIONS}


try:
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.gthread import TConn, ThreadWorker
except ImportError:
    ThreadWorker = None  # type: ignore[assignment,misc]

if ThreadWorker is not None:

    class DrainingThreadWorker(ThreadWorker):  # type: ignore[misc,valid-type]
        """gunicorn's gthread worker that, once stopping, stops listening too.

        gthread stops accepting but keeps its copy of the listening socket open while it
        finishes its requests: connections the kernel completes meanwhile wait in the backlog
        and are reset when the worker exits, after nginx has sent them a request (a POST it
        may not retry: a 502). Here the backlog is served and the socket closed at once. On
        SIGTERM the arbiter has already made the socket take no new connection
        (``DrainingArbiter``), so the backlog is complete when served; once every copy is
        closed, connections are refused, which nginx passes to another replica whatever the
        method. On SIGHUP the arbiter keeps its copy and the new workers accept from it."""

        def set_accept_enabled(self, enabled: bool) -> None:
            super().set_accept_enabled(enabled)
            if enabled or self.alive:  # alive: only the connection limit pauses accepting
                return
            for listener in self.sockets:
                while True:
                    try:
                        client, address = listener.accept()
                    except OSError:  # nothing left waiting (the listener is non-blocking)
                        break
                    self.nr_conns += 1
                    client.setblocking(True)
                    self.enqueue_req(TConn(self.cfg, client, address, listener.getsockname()))
                listener.close()

    class DrainingArbiter(Arbiter):  # type: ignore[misc,valid-type]
        """On a graceful stop (SIGTERM), the listening sockets stop taking new connections
        before anything closes them (``refuse_new_connections``), then the workers drain the
        backlog (``DrainingThreadWorker``). A reload (SIGHUP) does not stop: the socket stays
        open to the new workers."""

        def stop(self, graceful: bool = True) -> None:
            refusing = [refuse_new_connections(listener.sock) for listener in self.LISTENERS] if graceful else []
            if any(refusing):
                time.sleep(HANDSHAKE_SETTLE)
            super().stop(graceful)


# Classic BPF, run by the kernel on each segment reaching a listening TCP socket (the data start
# at the TCP header): drop a SYN (flags byte 13, bit 0x02), pass the rest (the ACKs that finish
# handshakes already begun).
_SYN_DROP = ((0x30, 0, 0, 13), (0x45, 0, 1, 0x02), (0x06, 0, 0, 0), (0x06, 0, 0, 0xFFFFFFFF))
_SO_ATTACH_FILTER = 26  # Linux; not in Python's socket module
HANDSHAKE_SETTLE = 0.2  # s: a handshake begun before the filter ends in the backlog by then


def refuse_new_connections(listener: socket.socket) -> bool:
    """Stop a listening TCP socket from taking new connections while it stays open: SYNs are
    dropped (the client's kernel sends its SYN again ~1 s later, and by then the socket is
    closed: refused, which nginx passes to another replica whatever the method), while
    handshakes already begun still complete into the backlog. Otherwise the last process to
    close the socket resets whatever the kernel completed after its last accept, possibly with
    a POST written on it (a 502 nginx may not retry). False where it cannot be done (not TCP, not
    Linux): the old race remains there."""
    if listener.family not in (socket.AF_INET, socket.AF_INET6) or not sys.platform.startswith("linux"):
        return False
    code = b"".join(struct.pack("HBBI", *insn) for insn in _SYN_DROP)
    program = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(_SYN_DROP), ctypes.addressof(program))  # struct sock_fprog
    try:
        listener.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    except OSError:
        return False
    return True


# The web role's gunicorn settings (visa web, deploy/): threads for the requests that wait on
# the database. nginx opens a connection per request to the web replicas (deploy/nginx: a
# kept-alive connection that a draining worker closes would fail a POST sent on it).
WEB_OPTIONS: dict[str, Any] = {
    "worker_class": "visa.serving.DrainingThreadWorker",
    "graceful_timeout": 30,
    "timeout": 60,
    "keepalive": 2,
    "accesslog": None,
}


def settle_heap() -> None:
    """Once a serving process has loaded its app: what it loaded (modules, the models, compiled
    templates and statements: ~170,000 objects) is moved out of the garbage collector's sight.
    Otherwise each full collection walks all of it, ~65 ms every ~150 admin pages, during which
    every thread of the process waits: most of the worst latencies under load."""
    gc.collect()
    gc.freeze()


def create_wsgi_app(settings: Settings | None = None) -> Flask:
    """``visa web``: the pages and the REST API as plain WSGI (event streams, desktops and the
    instances' web proxies are the gateway's: ``visa gateway``)."""
    from visa.web.app import create_app

    return create_app(settings)


def serve_web(bind: str, *, workers: int, threads: int, forwarded_allow_ips: str,
              options: dict[str, Any] | None = None, load: Callable[[], Flask] | None = None) -> None:
    """gunicorn in this process, loading the Flask app (``load``, default ``create_wsgi_app``) in
    each worker: no preload, every worker opens its own database pool after the fork."""
    from gunicorn.app.base import BaseApplication

    factory = load or create_wsgi_app

    class WebApplication(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            settings = {**WEB_OPTIONS, "bind": [bind], "workers": workers, "threads": threads,
                        "forwarded_allow_ips": forwarded_allow_ips, "proc_name": "visa-web", **(options or {})}
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self) -> Flask:
            app = factory()
            settle_heap()
            return app

        def run(self) -> None:
            try:
                DrainingArbiter(self).run()
            except RuntimeError as exc:  # gunicorn's own way: its message, no traceback
                sys.exit(f"\nError: {exc}\n")

    WebApplication().run()

