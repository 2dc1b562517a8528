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
from collections.abc import Awaitable, Callable, Generator

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

    def __init__(self, view_only: bool, server: ServerFilter | None = None) -> None:
        self.view_only = view_only
        self.interacted = False
        self._pending = bytearray()
        # A connection whose server stream is followed: only encodings it can measure, and
        # no change of pixel format once updates flow (they would race the change).
        self.server = server
        self._updating = False

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
            if self.server is not None and kind in (SET_ENCODINGS, SET_PIXEL_FORMAT, FRAMEBUFFER_UPDATE_REQUEST):
                if kind == FRAMEBUFFER_UPDATE_REQUEST:
                    self._updating = True
                elif kind == SET_PIXEL_FORMAT:
                    if self._updating:
                        raise RfbError("the pixel format may not change once updates are sent")
                    self.server.set_pixel_format(bytes(buf[pos + 4 : pos + 20]))
                else:
                    if pos > start:
                        out.append(bytes(buf[start:pos]))
                    count = (length - 4) // 4
                    asked = list(struct.unpack_from(f">{count}i", buf, pos + 4))
                    kept = measured_encodings(asked)
                    out.append(struct.pack(f">BxH{len(kept)}i", SET_ENCODINGS, len(kept), *kept))
                    start = pos + length
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


# ---------------------------------------------------------------------- the server's stream

# Server message types.
FRAMEBUFFER_UPDATE = 0
SET_COLOUR_MAP_ENTRIES = 1
BELL = 2
SERVER_CUT_TEXT = 3
END_OF_CONTINUOUS_UPDATES = 150
SERVER_FENCE = 248
SERVER_XVP = 250

# Encodings whose rectangles ``ServerFilter`` can measure; a filtered connection asks the
# server for these only (raw is always allowed).
RAW, COPY_RECT, ZLIB, TIGHT, ZRLE, H264 = 0, 1, 6, 7, 16, 50
CURSOR, DESKTOP_SIZE, LAST_RECT, QEMU_KEY = -239, -223, -224, -258
DESKTOP_NAME, EXTENDED_DESKTOP_SIZE, XVP_PSEUDO, FENCE, CONTINUOUS_UPDATES = -307, -308, -309, -312, -313
MEASURED = frozenset({RAW, COPY_RECT, ZLIB, TIGHT, ZRLE, H264, CURSOR, DESKTOP_SIZE, LAST_RECT, QEMU_KEY, DESKTOP_NAME,
                      EXTENDED_DESKTOP_SIZE, XVP_PSEUDO, FENCE, CONTINUOUS_UPDATES})
# JPEG quality and compression level pseudo-encodings carry no data.
LEVELS = frozenset(range(-32, -22)) | frozenset(range(-256, -246))


# What the filter asks for: peek n bytes (held, sent back), pass or drop the next n bytes.
Steps = Generator[tuple[str, int], bytes, None]


def measured_encodings(encodings: list[int]) -> list[int]:
    """The client's encodings that the server filter can follow, in the client's order."""
    return [e for e in encodings if e in MEASURED or e in LEVELS]


class ServerFilter:
    """Follows the server's messages to remove its clipboard (ServerCutText) from the stream
    of a viewer the owner's policy does not give it to. Only message and rectangle headers
    are read; pixel data passes through in the chunks it came in.

    ``feed`` returns the bytes to send on; ``drop_clipboard`` may change at any time."""

    def __init__(self, server_init: bytes, drop_clipboard: bool) -> None:
        self.drop_clipboard = drop_clipboard
        self.set_pixel_format(server_init[4:20])
        self._held = bytearray()
        self._steps = self._messages()
        self._want = next(self._steps)

    def set_pixel_format(self, pixel_format: bytes) -> None:
        bpp, depth, _, true_colour, rmax, gmax, bmax = struct.unpack(">BBBBHHH", pixel_format[:10])
        if bpp not in (8, 16, 32):
            raise RfbError(f"unsupported pixel format ({bpp} bits per pixel)")
        self.bytes_per_pixel = bpp // 8
        # Tight sends 24-bit true colour pixels of a 32-bit format in 3 bytes.
        self.tight_pixel = 3 if (bpp == 32 and depth == 24 and true_colour and rmax == gmax == bmax == 255) \
            else self.bytes_per_pixel

    def feed(self, data: bytes) -> bytes:
        out: list[bytes | memoryview] = []
        view = memoryview(data)
        pos, end = 0, len(data)
        while True:
            op, n = self._want
            if op == "peek":
                need = n - len(self._held)
                if need > 0:
                    take = min(need, end - pos)
                    self._held += view[pos : pos + take]
                    pos += take
                    if len(self._held) < n:
                        break
                self._want = self._steps.send(bytes(self._held[:n]))
                continue
            held = min(n, len(self._held))
            if held:
                if op == "pass":
                    out.append(bytes(self._held[:held]))
                del self._held[:held]
                n -= held
            take = min(n, end - pos)
            if take and op == "pass":
                out.append(view[pos : pos + take])
            pos += take
            n -= take
            if n:
                self._want = (op, n)
                break
            self._want = next(self._steps)
        if len(out) == 1 and len(out[0]) == end:
            return data
        return b"".join(out)

    def _messages(self) -> Steps:
        """The server's messages, told as steps: peek n bytes (held), pass or drop n bytes."""
        while True:
            (kind,) = yield ("peek", 1)
            if kind == FRAMEBUFFER_UPDATE:
                head = yield ("peek", 4)
                (rects,) = struct.unpack(">H", head[2:4])
                yield ("pass", 4)
                done = 0
                while done < rects:
                    rect = yield ("peek", 12)
                    _, _, w, h, encoding = struct.unpack(">HHHHi", rect)
                    yield ("pass", 12)
                    if encoding == LAST_RECT:
                        break
                    yield from self._rectangle(w, h, encoding)
                    done += 1
            elif kind == SET_COLOUR_MAP_ENTRIES:
                head = yield ("peek", 6)
                yield ("pass", 6 + 6 * struct.unpack(">H", head[4:6])[0])
            elif kind in (BELL, END_OF_CONTINUOUS_UPDATES):
                yield ("pass", 1)
            elif kind == SERVER_CUT_TEXT:
                head = yield ("peek", 8)
                length = abs(struct.unpack(">i", head[4:8])[0])
                yield ("drop" if self.drop_clipboard else "pass", 8 + length)
            elif kind == SERVER_FENCE:
                head = yield ("peek", 9)
                yield ("pass", 9 + head[8])
            elif kind == SERVER_XVP:
                yield ("pass", 4)
            else:
                raise RfbError(f"unknown server message type {kind}")

    def _rectangle(self, w: int, h: int, encoding: int) -> Steps:
        if encoding == RAW:
            yield ("pass", w * h * self.bytes_per_pixel)
        elif encoding == COPY_RECT:
            yield ("pass", 4)
        elif encoding in (ZRLE, ZLIB):
            head = yield ("peek", 4)
            yield ("pass", 4 + struct.unpack(">I", head)[0])
        elif encoding == H264:  # length, flags, the stream's bytes
            head = yield ("peek", 4)
            yield ("pass", 8 + struct.unpack(">I", head)[0])
        elif encoding == TIGHT:
            yield from self._tight(w, h)
        elif encoding == CURSOR:
            yield ("pass", w * h * self.bytes_per_pixel + (w + 7) // 8 * h)
        elif encoding == DESKTOP_NAME:
            head = yield ("peek", 4)
            yield ("pass", 4 + struct.unpack(">I", head)[0])
        elif encoding == EXTENDED_DESKTOP_SIZE:
            head = yield ("peek", 1)
            yield ("pass", 4 + 16 * head[0])
        elif encoding in (DESKTOP_SIZE, QEMU_KEY, XVP_PSEUDO, FENCE, CONTINUOUS_UPDATES):
            return
        else:
            raise RfbError(f"the server used encoding {encoding}, which was not asked for")

    def _tight(self, w: int, h: int) -> Steps:
        (control,) = yield ("peek", 1)
        yield ("pass", 1)
        kind = control >> 4
        if kind == 8:  # fill
            yield ("pass", self.tight_pixel)
            return
        if kind in (9, 10):  # JPEG, PNG
            yield from self._compact_data()
            return
        if kind > 7:
            raise RfbError(f"unknown tight compression {kind}")
        size = w * h * self.tight_pixel
        if control & 0x40:  # a filter follows
            (flt,) = yield ("peek", 1)
            yield ("pass", 1)
            if flt == 1:  # palette
                (colours,) = yield ("peek", 1)
                colours += 1
                yield ("pass", 1 + colours * self.tight_pixel)
                size = (w + 7) // 8 * h if colours == 2 else w * h
            elif flt not in (0, 2):
                raise RfbError(f"unknown tight filter {flt}")
        if size < 12:
            yield ("pass", size)
        else:
            yield from self._compact_data()

    def _compact_data(self) -> Steps:
        """Tight's compact length (1 to 3 bytes) and the data it counts."""
        length, shift, used = 0, 0, 0
        while True:
            head = yield ("peek", used + 1)
            byte = head[used]
            used += 1
            if used == 3:
                length |= byte << 14
                break
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        yield ("pass", used + length)
