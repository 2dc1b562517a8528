"""The RFB (VNC) protocol as far as the gateway needs it.

* ``server_handshake``: authenticate to the VNC server with the instance secret (VncAuth)
  and read its ServerInit;
* ``browser_handshake``: offer the browser security type None and replay that ServerInit,
  so the browser speaks RFB without ever holding the password;
* ``ClientFilter``: split the browser's byte stream into client messages, to drop the
  input of view-only members and to notice activity.

References: RFC 6143 and the community RFB specification (rfbproto) for the extensions
noVNC sends (EnableContinuousUpdates, Fence, xvp, SetDesktopSize, QEMU key events).
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from visa.gateway.relay import Upstream

SEC_INVALID = 0
SEC_NONE = 1
SEC_VNC_AUTH = 2

# Client message types.
SET_PIXEL_FORMAT = 0
SET_ENCODINGS = 2
FRAMEBUFFER_UPDATE_REQUEST = 3
KEY_EVENT = 4
POINTER_EVENT = 5
CLIENT_CUT_TEXT = 6
ENABLE_CONTINUOUS_UPDATES = 150
CLIENT_FENCE = 248
XVP = 250
SET_DESKTOP_SIZE = 251
QEMU = 255

# Clipboard text larger than this ends the connection rather than filling memory.
MAX_CUT_TEXT = 16 * 1024 * 1024


class RfbError(Exception):
    """The peer broke the protocol or refused us; the message is safe to log."""


def _reverse_bits(byte: int) -> int:
    return int(f"{byte:08b}"[::-1], 2)


_KEY_BITS = bytes(_reverse_bits(b) for b in range(256))


def vnc_auth_response(password: str, challenge: bytes) -> bytes:
    """VncAuth: DES-encrypt the 16-byte challenge with the password as key (first 8 bytes,
    zero-padded), each key byte bit-reversed as VNC has always done."""
    if len(challenge) != 16:
        raise RfbError("a VncAuth challenge is 16 bytes")
    key = password.encode("latin-1", errors="replace")[:8].ljust(8, b"\0").translate(_KEY_BITS)
    # Triple DES with one key three times is single DES, which cryptography no longer offers alone.
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return encryptor.update(challenge) + encryptor.finalize()


def _version(greeting: bytes) -> int:
    """The minor version of an ``RFB 003.00x`` greeting: 3, 7 or 8."""
    if len(greeting) != 12 or not greeting.startswith(b"RFB ") or greeting[11:] != b"\n":
        raise RfbError("not an RFB greeting")
    try:
        major, minor = int(greeting[4:7]), int(greeting[8:11])
    except ValueError as exc:
        raise RfbError("not an RFB greeting") from exc
    if major != 3 or minor < 3:
        raise RfbError(f"unsupported RFB version {major}.{minor}")
    # 3.4/3.6 (UltraVNC) behave as 3.3; anything newer than 3.8 is spoken as 3.8.
    return 8 if minor >= 8 else 7 if minor == 7 else 3


async def _reason(up: Upstream) -> str:
    (length,) = struct.unpack(">I", await up.read_exactly(4))
    return (await up.read_exactly(min(length, 4096))).decode(errors="replace")


async def server_handshake(up: Upstream, password: str) -> bytes:
    """Authenticate to the VNC server and return its ServerInit message (shared session)."""
    minor = _version(await up.read_exactly(12))
    await up.write(b"RFB 003.00%d\n" % minor)
    if minor == 3:
        (chosen,) = struct.unpack(">I", await up.read_exactly(4))
        if chosen == SEC_INVALID:
            raise RfbError(f"the VNC server refused: {await _reason(up)}")
    else:
        (count,) = await up.read_exactly(1)
        if count == 0:
            raise RfbError(f"the VNC server refused: {await _reason(up)}")
        offered = await up.read_exactly(count)
        if SEC_VNC_AUTH in offered:
            chosen = SEC_VNC_AUTH
        elif SEC_NONE in offered:
            chosen = SEC_NONE
        else:
            raise RfbError(f"the VNC server offers no supported security type ({list(offered)})")
        await up.write(bytes([chosen]))
    if chosen == SEC_VNC_AUTH:
        challenge = await up.read_exactly(16)
        await up.write(vnc_auth_response(password, challenge))
    elif chosen != SEC_NONE:
        raise RfbError(f"unsupported security type {chosen}")
    if chosen == SEC_VNC_AUTH or minor == 8:
        (result,) = struct.unpack(">I", await up.read_exactly(4))
        if result != 0:
            reason = await _reason(up) if minor == 8 else "authentication failed"
            raise RfbError(f"VNC authentication failed: {reason}")
    await up.write(b"\x01")  # ClientInit: shared, so several members can watch one desktop
    head = await up.read_exactly(24)
    (name_length,) = struct.unpack(">I", head[20:24])
    if name_length > 65536:
        raise RfbError("desktop name too long")
    return head + await up.read_exactly(name_length)


class BrowserReader:
    """Bytes of the browser's websocket messages, read as a stream during the handshake."""

    def __init__(self, receive: Callable[[], Awaitable[bytes | None]]) -> None:
        self._receive = receive
        self.buffer = bytearray()

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            data = await self._receive()
            if data is None:
                raise RfbError("the browser went away during the handshake")
            self.buffer += data
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out


async def browser_handshake(
    reader: BrowserReader, send: Callable[[bytes], Awaitable[None]], server_init: bytes
) -> None:
    """Play the VNC server to the browser, with no security: the gateway already checked
    who is connecting. Returns once the browser has the ServerInit; bytes it sent after its
    ClientInit stay in ``reader.buffer``."""
    await send(b"RFB 003.008\n")
    minor = _version(await reader.read_exactly(12))
    if minor == 3:
        await send(struct.pack(">I", SEC_NONE))
    else:
        await send(bytes([1, SEC_NONE]))
        (choice,) = await reader.read_exactly(1)
        if choice != SEC_NONE:
            raise RfbError(f"the browser chose security type {choice}")
        if minor == 8:
            await send(struct.pack(">I", 0))
    await reader.read_exactly(1)  # ClientInit: the server side is always shared
    await send(server_init)


def _message_length(buf: bytearray | memoryview, pos: int) -> int | None:
    """Length of the client message at ``pos``, or None if more bytes are needed to tell."""
    avail = len(buf) - pos
    kind = buf[pos]
    if kind == SET_PIXEL_FORMAT:
        return 20
    if kind in (FRAMEBUFFER_UPDATE_REQUEST, ENABLE_CONTINUOUS_UPDATES):
        return 10
    if kind == KEY_EVENT:
        return 8
    if kind == POINTER_EVENT:
        return 6
    if kind == XVP:
        return 4
    if kind == SET_ENCODINGS:
        return None if avail < 4 else 4 + 4 * struct.unpack_from(">H", buf, pos + 2)[0]
    if kind == CLIENT_CUT_TEXT:
        if avail < 8:
            return None
        # Negative: the extended clipboard format, with the absolute value as length.
        length = abs(struct.unpack_from(">i", buf, pos + 4)[0])
        if length > MAX_CUT_TEXT:
            raise RfbError("clipboard text too large")
        return 8 + length
    if kind == CLIENT_FENCE:
        return None if avail < 9 else 9 + buf[pos + 8]
    if kind == SET_DESKTOP_SIZE:
        return None if avail < 7 else 8 + 16 * buf[pos + 6]
    if kind == QEMU:
        if avail < 2:
            return None
        if buf[pos + 1] == 0:  # extended key event
            return 12
        if buf[pos + 1] == 1:  # audio: enable/disable, or set format
            if avail < 4:
                return None
            return 10 if struct.unpack_from(">H", buf, pos + 2)[0] == 2 else 4
    raise RfbError(f"unknown client message type {kind}")


# Messages that act on the desktop: dropped for view-only members.
INPUT_TYPES = frozenset({KEY_EVENT, POINTER_EVENT, CLIENT_CUT_TEXT, SET_DESKTOP_SIZE, XVP})


class ClientFilter:
    """Cuts the browser's stream into whole client messages.

    ``feed`` returns the bytes to send to the server (whole messages only, input removed
    when view-only) and sets ``interacted`` when keyboard or mouse input went through."""

    def __init__(self, view_only: bool) -> None:
        self.view_only = view_only
        self.interacted = False
        self._pending = bytearray()

    def feed(self, data: bytes) -> bytes:
        if self._pending:
            self._pending += data
            buf: bytes | bytearray = self._pending
        else:
            buf = data
        out: list[bytes] = []
        pos = 0
        start = 0  # beginning of a run of messages that are forwarded untouched
        end = len(buf)
        while pos < end:
            length = _message_length(buf, pos)
            if length is None or pos + length > end:
                break
            kind = buf[pos]
            is_input = kind in INPUT_TYPES or (kind == QEMU and buf[pos + 1] == 0)
            if is_input and self.view_only:
                if pos > start:
                    out.append(bytes(buf[start:pos]))
                start = pos + length
            elif is_input and kind in (KEY_EVENT, POINTER_EVENT, QEMU):
                self.interacted = True
            pos += length
        if pos > start:
            out.append(bytes(buf[start:pos]) if (start or pos < end or buf is self._pending) else data)
        rest = bytes(buf[pos:]) if pos < end else b""
        self._pending = bytearray(rest)
        return out[0] if len(out) == 1 else b"".join(out)
