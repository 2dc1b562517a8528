"""How visa's ASGI processes are served: the same uvicorn options under ``visa run``,
``visa gateway`` and gunicorn, those the gateway benchmark (bench/gateway.py) measures.

* ``UVICORN_OPTIONS``: the relay's tuned websocket protocol, no per-message deflate (large
  framebuffer updates are written without a copy only then), a short graceful shutdown
  (event streams end on their own; a restart must not wait for them).
* ``RelayUvicornWorker``: gunicorn's worker class for production
  (``gunicorn -k visa.serving.RelayUvicornWorker``), from the ``uvicorn-worker`` package that
  replaces the deprecated ``uvicorn.workers``.
"""

from __future__ import annotations

from typing import Any

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
