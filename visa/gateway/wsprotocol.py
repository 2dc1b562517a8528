"""uvicorn's websocket protocol, tuned for relays.

uvicorn stops reading a websocket after every message it queues for the app and starts
again when the app takes it: two event-loop (epoll) changes per message, on the path of
every key press. This subclass stops reading only when ``MAX_QUEUED`` messages wait, which
keeps the same protection against a client that sends faster than the app reads.

Use it with ``uvicorn.run(..., ws="visa.gateway.wsprotocol:RelayWebSocketProtocol")``.
"""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

MAX_QUEUED = 32


class RelayWebSocketProtocol(WebSocketsSansIOProtocol):
    def send_receive_event_to_app(self) -> None:
        paused = self.read_paused
        self.read_paused = True  # uvicorn pauses only when not paused yet: skip its pause
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = paused
        if not paused and self.queue.qsize() >= MAX_QUEUED:
            # uvicorn's receive() resumes reading once the queue is empty again.
            self.read_paused = True
            self.transport.pause_reading()
