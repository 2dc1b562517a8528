"""uvicorn's websocket protocol, tuned for relays.

* uvicorn stops reading a websocket after every message it queues for the app and starts
  again when the app takes it: two event-loop (epoll) changes per message, on the path of
  every key press. Here reading stops only when ``MAX_QUEUED`` messages wait, which keeps
  the protection against a client that sends faster than the app reads.
* Large binary messages (framebuffer updates) are written as frame header + payload with
  ``writelines`` instead of being copied twice into one frame first.

Use it with ``uvicorn.run(..., ws="visa.gateway.wsprotocol:RelayWebSocketProtocol")``;
``ws_per_message_deflate`` must stay off for the second point to apply (it checks).
"""

from __future__ import annotations

import struct

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

MAX_QUEUED = 32
# Below this, the copy costs less than a second buffer in the write.
DIRECT_SEND_MIN = 16 * 1024


def _binary_header(length: int) -> bytes:
    # FIN + binary opcode; a server's frames are not masked (RFC 6455 5.1).
    if length < 126:
        return struct.pack("!BB", 0x82, length)
    if length < 65536:
        return struct.pack("!BBH", 0x82, 126, length)
    return struct.pack("!BBQ", 0x82, 127, length)


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

    async def send(self, message: ASGISendEvent) -> None:
        data = message.get("bytes") if message["type"] == "websocket.send" else None
        if (
            data is not None
            and len(data) >= DIRECT_SEND_MIN
            and self.handshake_complete
            and self.initial_response is None
            and not self.close_sent
            and not self.conn.extensions
            and self.conn.state is State.OPEN
        ):
            await self.writable.wait()
            if self.disconnected:
                raise ClientDisconnected()
            if self.conn.state is State.OPEN and not self.close_sent:
                self.transport.writelines((_binary_header(len(data)), data))
                return
        await super().send(message)
