"""A small RFB client over a websocket, as noVNC speaks it to the gateway (security None)."""

from __future__ import annotations

import struct

from websockets.sync.client import ClientConnection

RAW = 0
# 32 bpp, depth 24, little endian, true colour, BGRX.
PIXEL_FORMAT = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)


def key_event(keysym: int, down: bool) -> bytes:
    return struct.pack(">BBxxI", 4, 1 if down else 0, keysym)


def pointer_event(x: int, y: int, buttons: int = 0) -> bytes:
    return struct.pack(">BBHH", 5, buttons, x, y)


def update_request(width: int, height: int, incremental: bool = False) -> bytes:
    return struct.pack(">BBHHHH", 3, 1 if incremental else 0, 0, 0, width, height)


class WsRfb:
    def __init__(self, ws: ClientConnection, timeout: float = 10.0) -> None:
        self.ws = ws
        self.timeout = timeout
        self.buffer = bytearray()
        self.width = self.height = 0
        self.name = ""

    def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            data = self.ws.recv(timeout=self.timeout)
            assert isinstance(data, bytes), "the gateway speaks binary"
            self.buffer += data
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    def send(self, data: bytes) -> None:
        self.ws.send(data)

    def handshake(self) -> list[int]:
        """Version, security (returns the types offered: the gateway offers None only), init."""
        assert self.read(12) == b"RFB 003.008\n"
        self.send(b"RFB 003.008\n")
        (count,) = self.read(1)
        offered = list(self.read(count))
        self.send(b"\x01")
        assert struct.unpack(">I", self.read(4)) == (0,)
        self.send(b"\x01")  # shared
        self.width, self.height = struct.unpack(">HH", self.read(4))
        self.read(16)
        (name_length,) = struct.unpack(">I", self.read(4))
        self.name = self.read(name_length).decode()
        self.send(b"\x00\x00\x00\x00" + PIXEL_FORMAT)
        self.send(struct.pack(">BxHi", 2, 1, RAW))
        return offered

    def screen(self) -> bytes:
        """The whole screen, non-incremental, assembled from raw rectangles."""
        self.send(update_request(self.width, self.height))
        return self.read_update()

    def read_update(self) -> bytes:
        screen = bytearray(self.width * self.height * 4)
        while True:
            (kind,) = self.read(1)
            if kind == 0:
                break
            if kind == 1:  # SetColourMapEntries
                _, _, n = struct.unpack(">xHH", self.read(5))
                self.read(6 * n)
            elif kind == 2:  # Bell
                continue
            elif kind == 3:  # ServerCutText
                self.read(3)
                (length,) = struct.unpack(">I", self.read(4))
                self.read(length)
            else:
                raise AssertionError(f"unexpected server message {kind}")
        (rects,) = struct.unpack(">xH", self.read(3))
        for _ in range(rects):
            x, y, w, h, encoding = struct.unpack(">HHHHi", self.read(12))
            if encoding != RAW:
                continue
            data = self.read(w * h * 4)
            for row in range(h):
                start = ((y + row) * self.width + x) * 4
                screen[start : start + w * 4] = data[row * w * 4 : (row + 1) * w * 4]
        return bytes(screen)

    def sync(self) -> None:
        """Wait until the server has handled everything sent so far (it answers in order)."""
        self.send(update_request(1, 1))
        self.read_update()


def distinct_colours(screen: bytes) -> int:
    return len({screen[i : i + 3] for i in range(0, len(screen), 4)})
