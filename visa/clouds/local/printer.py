"""A local session's printer: a CUPS scheduler of its own that writes each job as a PDF in
the session's ``~/PDF``, as the cups-pdf queue of visa's image does on a VM.

``cupsd`` runs inside the session (its sandbox, its account, no capability), listening on a
unix socket in the session's ``run`` directory only, with its configuration, spool and logs
there too; every program of the session finds it through ``CUPS_SERVER``. cups-pdf itself
needs root (it changes to the job's user), so the queue's backend is this file: it copies
the PDF that CUPS' filters made (``texttopdf``, ``pdftopdf``...) into ``~/PDF``, named after
the job's title the way cups-pdf names it (``report.txt`` -> ``report.pdf``).

Stdlib only: the session loads it from the file beside the supervisor, and CUPS runs it as
a backend (``python printer.py backend <job> <user> <title> <copies> <options> [file]``) and
as the filter of plain text (``text``, same arguments).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
from pathlib import Path

SOCKET = "cups.sock"
DIRECTORY = "cups"
QUEUE = "PDF"
# Where the PDFs go, in the home (cups-pdf's default ``Out ${HOME}/PDF``).
PDF_DIR = "PDF"
TEXT_FILTER = "visa-text"
_UNSAFE = re.compile(r"[^\w.,+=@()\- ]")

# A PostScript printer description whose device takes PDF: CUPS' filters turn any job (text,
# images, PostScript) into PDF, the backend keeps it.
PPD = """*PPD-Adobe: "4.3"
*FormatVersion: "4.3"
*FileVersion: "1.0"
*LanguageVersion: English
*LanguageEncoding: ISOLatin1
*PCFileName: "VISAPDF.PPD"
*Manufacturer: "visa"
*Product: "(PDF)"
*ModelName: "PDF"
*ShortNickName: "PDF"
*NickName: "PDF files in ~/PDF"
*PSVersion: "(3010.000) 0"
*LanguageLevel: "3"
*ColorDevice: True
*DefaultColorSpace: RGB
*FileSystem: False
*Throughput: "1"
*LandscapeOrientation: Plus90
*TTRasterizer: Type42
*cupsVersion: 2.4
*cupsFilter2: "application/vnd.cups-pdf application/pdf 0 -"
*OpenUI *PageSize/Page Size: PickOne
*OrderDependency: 10 AnySetup *PageSize
*DefaultPageSize: A4
*PageSize A4/A4: "<</PageSize[595 842]>>setpagedevice"
*PageSize Letter/Letter: "<</PageSize[612 792]>>setpagedevice"
*CloseUI: *PageSize
*OpenUI *PageRegion: PickOne
*OrderDependency: 10 AnySetup *PageRegion
*DefaultPageRegion: A4
*PageRegion A4/A4: "<</PageSize[595 842]>>setpagedevice"
*PageRegion Letter/Letter: "<</PageSize[612 792]>>setpagedevice"
*CloseUI: *PageRegion
*DefaultImageableArea: A4
*ImageableArea A4/A4: "18 18 577 824"
*ImageableArea Letter/Letter: "18 18 594 774"
*DefaultPaperDimension: A4
*PaperDimension A4/A4: "595 842"
*PaperDimension Letter/Letter: "612 792"
"""


def configure(run_dir: Path, home: Path, *, python: str, script: str, cups_lib: str = "/usr/lib/cups") -> list[str]:
    """Write a scheduler's configuration under ``run_dir/cups`` (as the session sees it) and
    return the command that runs it in the foreground. ``script`` is this file's path and
    ``python`` an interpreter, both as the session sees them."""
    root = run_dir / DIRECTORY
    for sub in ("conf/ppd", "bin/backend", "spool", "cache", "state", "log"):
        (root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    if (root / "bin/filter").is_symlink():
        (root / "bin/filter").unlink()
    # CUPS looks up filters and its exec helper in ServerBin: CUPS' own, with ours beside them.
    daemon = root / "bin/daemon"
    if not daemon.is_symlink():
        daemon.symlink_to(f"{cups_lib}/daemon")
    filters = root / "bin/filter"
    filters.mkdir(mode=0o700, exist_ok=True)
    for name in os.listdir(f"{cups_lib}/filter"):
        if not (filters / name).is_symlink():
            (filters / name).symlink_to(f"{cups_lib}/filter/{name}")
    run = f"exec {shlex.quote(python)} -I {shlex.quote(script)}"
    _write(root / "bin/backend/pdf", f"#!/bin/sh\n{run} backend \"$@\"\n", 0o700)
    _write(filters / TEXT_FILTER, f"#!/bin/sh\n{run} text \"$@\"\n", 0o700)
    # Plain text through ours (cost 10) rather than texttopdf (cost 32): see ``text_filter``.
    _write(root / "conf/visa.convs", f"text/plain application/pdf 10 {TEXT_FILTER}\n", 0o600)
    _write(root / "conf/ppd" / f"{QUEUE}.ppd", PPD, 0o600)
    _write(root / "conf/cupsd.conf", "\n".join([
        f"Listen {run_dir / SOCKET}",
        "LogLevel warn",
        "Browsing No",
        "WebInterface No",
        "DefaultAuthType None",
        "PreserveJobHistory No",
        "PreserveJobFiles No",
        "MaxJobs 100",
        "<Location />",
        "  Order allow,deny",
        "  Allow all",
        "</Location>",
        "<Policy default>",
        "  <Limit All>",
        "    Order deny,allow",
        "  </Limit>",
        "</Policy>",
        "",
    ]), 0o600)  # fmt: skip
    _write(root / "conf/cups-files.conf", "\n".join([
        f"ServerRoot {root / 'conf'}",
        f"ServerBin {root / 'bin'}",
        "DataDir /usr/share/cups",
        f"CacheDir {root / 'cache'}",
        f"StateDir {root / 'state'}",
        f"RequestRoot {root / 'spool'}",
        f"TempDir {root / 'spool'}",
        f"AccessLog {root / 'log/access_log'}",
        f"ErrorLog {root / 'log/error_log'}",
        f"PageLog {root / 'log/page_log'}",
        "FileDevice No",
        "",
    ]), 0o600)  # fmt: skip
    # The device URI names the folder: the backend runs with CUPS' environment, not the session's.
    _write(root / "conf/printers.conf", "\n".join([
        f"<DefaultPrinter {QUEUE}>",
        f"Info PDF files in ~/{PDF_DIR}",
        f"DeviceURI pdf:{home / PDF_DIR}",
        "State Idle",
        "Accepting Yes",
        "Shared No",
        "</DefaultPrinter>",
        "",
    ]), 0o600)  # fmt: skip
    return ["cupsd", "-f", "-c", str(root / "conf/cupsd.conf"), "-s", str(root / "conf/cups-files.conf")]


def _write(path: Path, text: str, mode: int) -> None:
    if path.is_symlink():
        path.unlink()  # never write through a link the session left
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, mode)


def pdf_name(title: str, taken: set[str]) -> str:
    """cups-pdf's naming: the title's last part, its extension replaced by ``.pdf``, characters
    other than letters, digits and a few signs as ``_``; ``-1``, ``-2``... when the name is taken."""
    base = title.replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE.sub("_", base).strip(" .")
    stem = base.rsplit(".", 1)[0] if "." in base else base
    stem = stem.strip(" .")[:100] or "job"
    name, n = f"{stem}.pdf", 0
    while name in taken:
        n += 1
        name = f"{stem}-{n}.pdf"
    return name


def backend(argv: list[str]) -> int:
    """The CUPS backend: with no argument, describe the device; else write the job's PDF."""
    if not argv:
        print('direct pdf "Unknown" "PDF files in ~/PDF"')
        return 0
    if len(argv) not in (5, 6):
        print("ERROR: usage: pdf job user title copies options [file]", file=sys.stderr)
        return 1
    folder = os.environ.get("DEVICE_URI", "").removeprefix("pdf:")
    if not folder.startswith("/"):
        print("ERROR: the device URI names no folder", file=sys.stderr)
        return 1
    os.makedirs(folder, mode=0o700, exist_ok=True)
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    # Written under a hidden name, then linked into place whole: visa never offers half a PDF.
    part = f".job-{argv[0] if argv[0].isdigit() else 0}.part"
    try:
        source = os.open(argv[5], os.O_RDONLY) if len(argv) == 6 else sys.stdin.fileno()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part, dir_fd=dir_fd)
        out = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
        with os.fdopen(out, "wb") as target:
            while chunk := os.read(source, 1 << 16):
                target.write(chunk)
        taken = set(os.listdir(dir_fd))
        while True:
            name = pdf_name(argv[2], taken)
            try:
                os.link(part, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)  # never replaces a file
                break
            except FileExistsError:
                taken.add(name)
        os.unlink(part, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    print(f"INFO: printed to ~/{PDF_DIR}/{name}", file=sys.stderr)
    return 0


# A page of text: A4, Courier 10 pt, 12 pt apart, margins of 36 pt; long lines wrap.
_COLUMNS, _LINES = 90, 64
TEXT_MAX_BYTES = 16 * 2**20


def text_filter(argv: list[str], texttopdf: str = "/usr/lib/cups/filter/texttopdf") -> int:
    """The CUPS filter for plain text: a PDF in the standard Courier font (WinAnsi), whose text
    a reader can search and copy. CUPS' texttopdf embeds a TrueType font for UTF-8 jobs without
    saying which character each glyph is, so the words of its PDFs cannot be found again; it
    still prints what Courier cannot show (text outside Western European scripts), and what is
    too large to read at once."""
    if len(argv) not in (5, 6):
        print("ERROR: usage: text job user title copies options [file]", file=sys.stderr)
        return 1
    source = os.open(argv[5], os.O_RDONLY) if len(argv) == 6 else sys.stdin.fileno()
    data = b""
    while len(data) <= TEXT_MAX_BYTES and (chunk := os.read(source, 1 << 16)):
        data += chunk
    try:
        text = data.decode("utf-8").expandtabs(8).encode("cp1252").decode("cp1252")
        if len(data) > TEXT_MAX_BYTES:
            raise ValueError("too large")
    except ValueError:
        return _delegate(texttopdf, argv, data, source)
    sys.stdout.buffer.write(text_pdf(text))
    sys.stdout.buffer.flush()
    return 0


def _delegate(texttopdf: str, argv: list[str], head: bytes, source: int) -> int:
    """texttopdf on the whole job: what was read, then the rest of the input."""
    spool = os.environ.get("TMPDIR", "/tmp")
    fd = os.open(spool, os.O_WRONLY | os.O_TMPFILE, 0o600)
    try:
        os.write(fd, head)
        while chunk := os.read(source, 1 << 16):
            os.write(fd, chunk)
        os.set_inheritable(fd, True)  # texttopdf reads it through /proc/self/fd
        path = f"/proc/self/fd/{fd}"
        os.execv(texttopdf, [texttopdf, *argv[:5], path])
    finally:
        os.close(fd)
    return 1  # not reached: execv replaced this process


def text_pdf(text: str) -> bytes:
    """Plain text as a PDF of A4 pages (Courier, WinAnsiEncoding: ``text`` is cp1252's)."""
    lines: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        pieces = [line[i : i + _COLUMNS] for i in range(0, len(line), _COLUMNS)] or [""]
        lines.extend(p for piece in pieces for p in piece.split("\f"))
    if lines and lines[-1] == "":
        lines.pop()
    pages = [lines[i : i + _LINES] for i in range(0, len(lines), _LINES)] or [[]]
    objects: list[bytes] = [b"", b""]  # catalogue, page tree: written last
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier /Encoding /WinAnsiEncoding >>")
    kids = []
    for page in pages:
        ops = [b"BT /F1 10 Tf 12 TL 36 806 Td"]
        for line in page:
            escaped = line.encode("cp1252").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
            ops.append(b"(" + escaped + b") '")
        ops.append(b"ET")
        stream = b"\n".join(ops)
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 3 0 R >> >> >>" % len(objects))
        kids.append(len(objects))
    objects[0] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), len(kids))
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


if __name__ == "__main__":
    if sys.argv[1:2] == ["backend"]:
        sys.exit(backend(sys.argv[2:]))
    if sys.argv[1:2] == ["text"]:
        sys.exit(text_filter(sys.argv[2:]))
    sys.exit(f"usage: {sys.argv[0]} backend ...")
