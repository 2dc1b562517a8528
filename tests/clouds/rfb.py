"""A minimal RFB 3.8 client for tests: handshake with VncAuth, one raw framebuffer read."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

SECURITY_VNC_AUTH = 2


class RfbAuthFailed(Exception):
    pass


def vnc_auth_response(password: str, challenge: bytes) -> bytes:
    """DES-encrypt the 16-byte challenge with the password (first 8 bytes, zero-padded) as
    key, each key byte bit-reversed: VNC's historical quirk."""
    key = password.encode("latin-1")[:8].ljust(8, b"\0")
    key = bytes(int(f"{byte:08b}"[::-1], 2) for byte in key)
    # Triple DES with three equal keys is single DES.
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return encryptor.update(challenge) + encryptor.finalize()


@dataclass
class Framebuffer:
    width: int
    height: int
    name: str
    pixels: bytes = b""  # 32 bpp, little-endian BGRX

    def distinct_colours(self) -> int:
        return len({self.pixels[i : i + 3] for i in range(0, len(self.pixels), 4)})


class RfbClient:
    def __init__(self, where: int | str | tuple[str, int], timeout: float = 5.0) -> None:
        """A loopback TCP port, an address and port, or the path of a unix socket (the local cloud's sessions)."""
        if isinstance(where, tuple):
            self.sock = socket.create_connection(where, timeout=timeout)
        elif isinstance(where, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(where)
        else:
            self.sock = socket.create_connection(("127.0.0.1", where), timeout=timeout)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RfbClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(min(n - len(data), 1 << 20))
            if not chunk:
                raise ConnectionError(f"server closed the connection ({len(data)}/{n} bytes)")
            data += chunk
        return bytes(data)

    def handshake(self, password: str) -> Framebuffer:
        """Version, VncAuth and init; raises RfbAuthFailed with the server's reason."""
        version = self._read(12)
        assert version.startswith(b"RFB 003."), version
        self.sock.sendall(b"RFB 003.008\n")
        (count,) = struct.unpack("B", self._read(1))
        if count == 0:
            raise RfbAuthFailed(self._reason())
        types = self._read(count)
        assert SECURITY_VNC_AUTH in types, f"no VncAuth among {list(types)}"
        self.sock.sendall(bytes([SECURITY_VNC_AUTH]))
        challenge = self._read(16)
        self.sock.sendall(vnc_auth_response(password, challenge))
        (result,) = struct.unpack(">I", self._read(4))
        if result != 0:
            raise RfbAuthFailed(self._reason())
        self.sock.sendall(b"\x01")  # ClientInit: shared
        width, height = struct.unpack(">HH", self._read(4))
        self._read(16)  # server pixel format
        (name_len,) = struct.unpack(">I", self._read(4))
        name = self._read(name_len).decode(errors="replace")
        # 32 bpp, depth 24, little endian, true colour, BGRX; raw encoding only.
        pixel_format = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
        self.sock.sendall(b"\x00\x00\x00\x00" + pixel_format)
        self.sock.sendall(struct.pack(">BxHi", 2, 1, 0))
        return Framebuffer(width, height, name)

    def _reason(self) -> str:
        (length,) = struct.unpack(">I", self._read(4))
        return self._read(length).decode(errors="replace")

    def read_screen(self, fb: Framebuffer) -> Framebuffer:
        """Ask for the whole screen (non-incremental) and assemble the raw rectangles."""
        self.sock.sendall(struct.pack(">BBHHHH", 3, 0, 0, 0, fb.width, fb.height))
        screen = bytearray(fb.width * fb.height * 4)
        while True:
            (kind,) = struct.unpack("B", self._read(1))
            if kind == 0:
                break
            if kind == 1:  # SetColourMapEntries
                _, _, n = struct.unpack(">xHH", self._read(5))
                self._read(6 * n)
            elif kind == 2:  # Bell
                continue
            elif kind == 3:  # ServerCutText
                self._read(3)
                (length,) = struct.unpack(">I", self._read(4))
                self._read(length)
            else:
                raise AssertionError(f"unexpected server message {kind}")
        (rects,) = struct.unpack(">xH", self._read(3))
        for _ in range(rects):
            x, y, w, h, encoding = struct.unpack(">HHHHi", self._read(12))
            if encoding != 0:  # pseudo-encodings carry no pixels here
                continue
            data = self._read(w * h * 4)
            for row in range(h):
                start = ((y + row) * fb.width + x) * 4
                screen[start : start + w * 4] = data[row * w * 4 : (row + 1) * w * 4]
        return Framebuffer(fb.width, fb.height, fb.name, bytes(screen))
