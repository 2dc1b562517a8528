"""Moving pictures whose own cost is small and whose rate is known, for the desktop benchmark.

    python -m bench.framesource {volume,detector} COUNT_FILE [--fps 30] [--frames 60]

A window of 1024x768 shows pre-rendered frames at a fixed rate through MIT-SHM (XShmPutImage:
the X server reads the pixels from shared memory, so a frame costs the program a copy of
3 MB and the server one more), so that the desktop, not the application, is what limits the
frames a viewer gets. Two kinds of picture:

* ``volume``: a rotating volume rendering (an X-ray projection of a porous sample made of a
  few hundred blobs, false colour), smooth and detailed, as a tomography viewer shows it;
* ``detector``: a stack of detector images (powder rings that drift, Poisson noise, module
  gaps and a beam stop, log scale), noisy, as an area detector's live view shows it.

Every frame carries its number (16 bits) in a marker at the window's top-left corner: a row
of 16 cells of 16x16 pixels, white for a one, black for a zero, most significant first, and
below it the same row inverted, so that a reader can tell a whole marker from one torn
between two frames (``read_marker``). Frame ``n`` is ``frame(kind, n % frames, frames)``
with marker ``n``: deterministic, so a reader can compare what it got with what was shown.

Every tenth frame the program writes "<monotonic time> <frames shown>" to COUNT_FILE: the
achieved rate. A frame that is late by more than a frame's time is skipped, never bunched.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import signal
import time

import numpy as np

WIDTH, HEIGHT = 1024, 768
CELL, BITS = 16, 16
MARKER = (2 * CELL, BITS * CELL)  # rows, columns
KINDS = ("volume", "detector")
TITLE = "animation"


# ---------------------------------------------------------------- pictures


def _colours(stops: list[tuple[float, tuple[int, int, int]]]) -> np.ndarray:
    """A 256-entry palette of 0x00RRGGBB words, linear between the stops."""
    at = np.linspace(0, 1, 256)
    rgb = [np.interp(at, [s[0] for s in stops], [s[1][c] for s in stops]) for c in range(3)]
    r, g, b = (np.round(c).astype(np.uint32) for c in rgb)
    return (r << 16) | (g << 8) | b


INFERNO = _colours([(0, (0, 0, 4)), (0.25, (87, 16, 110)), (0.5, (188, 55, 84)), (0.75, (249, 142, 9)),
                    (1, (252, 255, 164))])  # fmt: skip
VIRIDIS = _colours([(0, (68, 1, 84)), (0.25, (59, 82, 139)), (0.5, (33, 145, 140)), (0.75, (94, 201, 98)),
                    (1, (253, 231, 37))])  # fmt: skip


def _volume(i: int, frames: int) -> np.ndarray:
    # The sample: blobs in a cylinder with a few large pores, the same in every frame.
    rng = np.random.default_rng(7)
    n = 400
    r = np.sqrt(rng.uniform(0, 1, n)) * 0.8
    phi = rng.uniform(0, 2 * np.pi, n)
    x, z, y = r * np.cos(phi), r * np.sin(phi), rng.uniform(-0.9, 0.9, n)
    size = rng.uniform(0.02, 0.09, n)
    weight = rng.uniform(0.4, 1.0, n)
    # One turn over the loop, about the vertical axis; an X-ray projection along the view:
    # each blob projects to a separable Gaussian, so a frame is one matrix product.
    h, w = HEIGHT // 2, WIDTH // 2
    ys = np.linspace(-1.0, 1.0, h)[None, :]
    xs = np.linspace(-4 / 3, 4 / 3, w)[None, :]
    gy = np.exp(-((ys - y[:, None]) ** 2) / (2 * size[:, None] ** 2)) * weight[:, None]

    def project(angle: float) -> np.ndarray:
        u = x * np.cos(angle) + z * np.sin(angle)
        return gy.T @ np.exp(-((xs - u[:, None]) ** 2) / (2 * size[:, None] ** 2))

    # Scaled by the first view's brightest pixel, the same for every frame.
    image = np.clip(project(2 * np.pi * i / frames) / project(0.0).max(), 0, 1)
    small = VIRIDIS[(image * 255).astype(np.uint8)]
    return np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)


def _detector(i: int, frames: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + i)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    radius = np.hypot(xx - 430.0, yy - 410.0)
    # Powder rings whose radii breathe over the loop (a temperature scan).
    scale = 1 + 0.03 * np.sin(2 * np.pi * i / frames)
    profile_r = np.arange(0, 1400, dtype=np.float64)
    profile = 40 * np.exp(-profile_r / 400.0)
    for k, (r0, height) in enumerate([(90, 900), (150, 500), (212, 1200), (260, 300), (330, 700), (395, 400),
                                      (460, 650), (540, 250), (610, 500), (700, 200)]):  # fmt: skip
        profile += height * np.exp(-((profile_r - r0 * scale) ** 2) / (2 * (3 + k * 0.4) ** 2))
    counts = rng.poisson(profile[radius.astype(np.int64)]).astype(np.float64)
    counts[radius < 40] = 0  # beam stop
    counts[:, 505:515] = 0  # module gaps
    counts[380:392, :] = 0
    level = np.log1p(counts) / np.log1p(1400)
    return INFERNO[(np.clip(level, 0, 1) * 255).astype(np.uint8)]


def frame(kind: str, i: int, frames: int) -> np.ndarray:
    """Picture ``i`` of the loop of ``frames`` (HEIGHT x WIDTH 0x00RRGGBB words), no marker."""
    if kind == "volume":
        return _volume(i, frames)
    if kind == "detector":
        return _detector(i, frames)
    raise ValueError(f"unknown kind {kind!r}")


def mark(pixels: np.ndarray, n: int) -> None:
    """Writes frame number ``n`` (mod 2**16) into the marker at the top-left corner."""
    for bit in range(BITS):
        one = (n >> (BITS - 1 - bit)) & 1
        cells = pixels[:, bit * CELL : (bit + 1) * CELL]
        cells[:CELL] = 0xFFFFFF if one else 0
        cells[CELL : 2 * CELL] = 0 if one else 0xFFFFFF


def shown(kind: str, n: int, frames: int) -> np.ndarray:
    """Frame ``n`` exactly as the program shows it."""
    pixels = frame(kind, n % frames, frames)
    mark(pixels, n)
    return pixels


def read_marker(rgb: np.ndarray) -> int | None:
    """The frame number in an RGB image whose top-left corner is the window's, or None when
    the marker is torn or unreadable. Reads each cell's centre, so lossy codecs are fine."""
    c = CELL // 2
    top = rgb[c, c::CELL][:BITS, :3].astype(np.int32).sum(axis=1) > 3 * 128
    bottom = rgb[CELL + c, c::CELL][:BITS, :3].astype(np.int32).sum(axis=1) > 3 * 128
    if len(top) < BITS or (top == bottom).any():
        return None
    return int("".join("1" if b else "0" for b in top), 2)


# ---------------------------------------------------------------- X11 through ctypes


class _ShmSegmentInfo(ctypes.Structure):
    _fields_ = [("shmseg", ctypes.c_ulong), ("shmid", ctypes.c_int), ("shmaddr", ctypes.c_void_p),
                ("readOnly", ctypes.c_int)]  # fmt: skip


class _XImage(ctypes.Structure):  # the leading fields of Xlib's XImage
    _fields_ = [("width", ctypes.c_int), ("height", ctypes.c_int), ("xoffset", ctypes.c_int),
                ("format", ctypes.c_int), ("data", ctypes.c_void_p), ("byte_order", ctypes.c_int),
                ("bitmap_unit", ctypes.c_int), ("bitmap_bit_order", ctypes.c_int), ("bitmap_pad", ctypes.c_int),
                ("depth", ctypes.c_int), ("bytes_per_line", ctypes.c_int), ("bits_per_pixel", ctypes.c_int)]  # fmt: skip


ZPIXMAP, IPC_PRIVATE, IPC_CREAT, IPC_RMID = 2, 0, 0o1000, 0


def _libs() -> tuple[ctypes.CDLL, ctypes.CDLL, ctypes.CDLL]:
    x11 = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
    xext = ctypes.CDLL(ctypes.util.find_library("Xext") or "libXext.so.6")
    libc = ctypes.CDLL(None, use_errno=True)
    vp, ul, ci, cu = ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_uint
    x11.XOpenDisplay.restype = vp
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    for name in ("XDefaultScreen", "XDefaultDepth", "XSync", "XFlush", "XMapWindow", "XStoreName",
                 "XCloseDisplay", "XDestroyImage"):  # fmt: skip
        getattr(x11, name).restype = ci
    x11.XDefaultScreen.argtypes = [vp]
    x11.XDefaultDepth.argtypes = [vp, ci]
    x11.XSync.argtypes = [vp, ci]
    x11.XFlush.argtypes = [vp]
    x11.XCloseDisplay.argtypes = [vp]
    x11.XRootWindow.restype = ul
    x11.XRootWindow.argtypes = [vp, ci]
    x11.XDefaultVisual.restype = vp
    x11.XDefaultVisual.argtypes = [vp, ci]
    x11.XDefaultGC.restype = vp
    x11.XDefaultGC.argtypes = [vp, ci]
    x11.XCreateSimpleWindow.restype = ul
    x11.XCreateSimpleWindow.argtypes = [vp, ul, ci, ci, cu, cu, cu, ul, ul]
    x11.XStoreName.argtypes = [vp, ul, ctypes.c_char_p]
    x11.XMapWindow.argtypes = [vp, ul]
    x11.XGetImage.restype = ctypes.POINTER(_XImage)
    x11.XGetImage.argtypes = [vp, ul, ci, ci, cu, cu, ul, ci]
    x11.XDestroyImage.argtypes = [ctypes.POINTER(_XImage)]
    x11.XTranslateCoordinates.restype = ci
    x11.XTranslateCoordinates.argtypes = [vp, ul, ul, ci, ci, ctypes.POINTER(ci), ctypes.POINTER(ci),
                                          ctypes.POINTER(ul)]  # fmt: skip
    xext.XShmQueryExtension.restype = ci
    xext.XShmQueryExtension.argtypes = [vp]
    xext.XShmCreateImage.restype = ctypes.POINTER(_XImage)
    xext.XShmCreateImage.argtypes = [vp, vp, cu, ci, vp, ctypes.POINTER(_ShmSegmentInfo), cu, cu]
    xext.XShmAttach.restype = ci
    xext.XShmAttach.argtypes = [vp, ctypes.POINTER(_ShmSegmentInfo)]
    xext.XShmPutImage.restype = ci
    xext.XShmPutImage.argtypes = [vp, ul, vp, ctypes.POINTER(_XImage), ci, ci, ci, ci, cu, cu, ci]
    libc.shmget.restype = ci
    libc.shmget.argtypes = [ci, ctypes.c_size_t, ci]
    libc.shmat.restype = vp
    libc.shmat.argtypes = [ci, vp, ci]
    libc.shmctl.restype = ci
    libc.shmctl.argtypes = [ci, ci, vp]
    return x11, xext, libc


class Window:
    """A top-level window of WIDTH x HEIGHT whose pixels are a shared-memory image."""

    def __init__(self, title: str = TITLE) -> None:
        self.x11, self.xext, libc = _libs()
        self.dpy = self.x11.XOpenDisplay(None)
        if not self.dpy:
            raise RuntimeError(f"cannot open display {os.environ.get('DISPLAY')!r}")
        if not self.xext.XShmQueryExtension(self.dpy):
            raise RuntimeError("the X server has no MIT-SHM")
        screen = self.x11.XDefaultScreen(self.dpy)
        depth = self.x11.XDefaultDepth(self.dpy, screen)
        self.window = self.x11.XCreateSimpleWindow(
            self.dpy, self.x11.XRootWindow(self.dpy, screen), 0, 0, WIDTH, HEIGHT, 0, 0, 0
        )
        self.x11.XStoreName(self.dpy, self.window, title.encode())
        self.gc = self.x11.XDefaultGC(self.dpy, screen)
        self.info = _ShmSegmentInfo()
        self.image = self.xext.XShmCreateImage(
            self.dpy, self.x11.XDefaultVisual(self.dpy, screen), depth, ZPIXMAP, None, ctypes.byref(self.info),
            WIDTH, HEIGHT,
        )  # fmt: skip
        image = self.image.contents
        if image.bits_per_pixel != 32:
            raise RuntimeError(f"a {image.bits_per_pixel}-bit visual; 32 bits per pixel are needed")
        size = image.bytes_per_line * HEIGHT
        self.info.shmid = libc.shmget(IPC_PRIVATE, size, IPC_CREAT | 0o600)
        if self.info.shmid < 0:
            raise OSError(ctypes.get_errno(), "shmget")
        self.info.shmaddr = libc.shmat(self.info.shmid, None, 0)
        self.info.readOnly = 0
        image.data = self.info.shmaddr
        self.xext.XShmAttach(self.dpy, ctypes.byref(self.info))
        self.x11.XSync(self.dpy, 0)
        libc.shmctl(self.info.shmid, IPC_RMID, None)  # freed when both sides detach
        buffer = (ctypes.c_uint32 * (size // 4)).from_address(self.info.shmaddr)
        self.pixels = np.ctypeslib.as_array(buffer).reshape(HEIGHT, image.bytes_per_line // 4)[:, :WIDTH]
        self.x11.XMapWindow(self.dpy, self.window)
        self.x11.XSync(self.dpy, 0)

    def show(self) -> None:
        """Puts the shared image into the window; returns once the server has read it."""
        self.xext.XShmPutImage(self.dpy, self.window, self.gc, self.image, 0, 0, 0, 0, WIDTH, HEIGHT, 0)
        self.x11.XSync(self.dpy, 0)


def window_origin(window: int, display: str | None = None) -> tuple[int, int]:
    """Where a window's top-left pixel is on the screen (its frame's decorations aside)."""
    x11, _, _ = _libs()
    dpy = x11.XOpenDisplay(display.encode() if display else None)
    if not dpy:
        raise RuntimeError(f"cannot open display {display!r}")
    try:
        x, y, child = ctypes.c_int(), ctypes.c_int(), ctypes.c_ulong()
        root = x11.XRootWindow(dpy, x11.XDefaultScreen(dpy))
        x11.XTranslateCoordinates(dpy, window, root, 0, 0, ctypes.byref(x), ctypes.byref(y), ctypes.byref(child))
    finally:
        x11.XCloseDisplay(dpy)
    return x.value, y.value


def grab(x: int, y: int, w: int, h: int, display: str | None = None) -> np.ndarray:
    """The root window's pixels (h x w x 3, RGB) as the X server holds them."""
    x11, _, _ = _libs()
    dpy = x11.XOpenDisplay(display.encode() if display else None)
    if not dpy:
        raise RuntimeError(f"cannot open display {display!r}")
    try:
        root = x11.XRootWindow(dpy, x11.XDefaultScreen(dpy))
        ptr = x11.XGetImage(dpy, root, x, y, w, h, 0xFFFFFFFF, ZPIXMAP)
        image = ptr.contents
        if image.bits_per_pixel != 32:
            raise RuntimeError(f"a {image.bits_per_pixel}-bit screen")
        words = np.ctypeslib.as_array((ctypes.c_uint32 * (image.bytes_per_line // 4 * h)).from_address(image.data))
        words = words.reshape(h, image.bytes_per_line // 4)[:, :w].copy()
        x11.XDestroyImage(ptr)
    finally:
        x11.XCloseDisplay(dpy)
    return rgb(words)


def rgb(words: np.ndarray) -> np.ndarray:
    """0x00RRGGBB words as an h x w x 3 array of bytes."""
    return np.stack([(words >> 16) & 255, (words >> 8) & 255, words & 255], axis=-1).astype(np.uint8)


# ---------------------------------------------------------------- the program


def run(kind: str, count_file: str, fps: float, frames: int) -> None:
    pictures = [frame(kind, i, frames) for i in range(frames)]
    window = Window()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    period = 1 / fps
    shown_count = 0
    start = next_at = time.monotonic()
    with open(count_file, "w") as out:
        while not stop:
            window.pixels[:] = pictures[shown_count % frames]
            mark(window.pixels, shown_count)
            window.show()
            shown_count += 1
            if shown_count % 10 == 0:
                out.seek(0)
                out.write(f"{time.monotonic()} {shown_count} {start}\n")
                out.truncate()
                out.flush()
            next_at += period
            late = time.monotonic() - next_at
            if late > period:  # behind by a frame or more: skip, never bunch
                next_at += (late // period) * period
            else:
                time.sleep(max(0.0, -late))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("count_file")
    parser.add_argument("--fps", type=float, default=30)
    parser.add_argument("--frames", type=int, default=60, help="pictures in the loop")
    args = parser.parse_args()
    run(args.kind, args.count_file, args.fps, args.frames)


if __name__ == "__main__":
    main()
