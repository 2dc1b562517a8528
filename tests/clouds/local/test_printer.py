"""The local session's printer backend names each PDF after its job's title as cups-pdf does,
whatever the title holds: a session's program chooses it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from visa.clouds.local import printer


@pytest.mark.parametrize(("title", "expected"), [
    ("report.txt", "report.pdf"),
    ("/home/alice/scans/run 12.dat", "run 12.pdf"),
    ("../../etc/passwd", "passwd.pdf"),
    ('<img src=x onerror="alert(1)">.txt', "_img src=x onerror=_alert(1)__.pdf"),
    ("..", "job.pdf"),
    ("", "job.pdf"),
    ("a\x00b\nc.ps", "a_b_c.pdf"),
    ("x" * 300 + ".txt", "x" * 100 + ".pdf"),
])
def test_pdf_names_are_plain_file_names(title: str, expected: str) -> None:
    assert printer.pdf_name(title, set()) == expected


def test_a_taken_name_gets_a_number() -> None:
    assert printer.pdf_name("report.txt", {"report.pdf", "report-1.pdf"}) == "report-2.pdf"


def test_the_backend_never_replaces_a_file_nor_writes_through_a_link(tmp_path: Path) -> None:
    out = tmp_path / "PDF"
    out.mkdir()
    (out / "report.pdf").write_text("earlier")
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (out / "report-1.pdf").symlink_to(victim)
    job = tmp_path / "job.pdf"
    job.write_bytes(b"%PDF-1.4 new")
    run = subprocess.run([sys.executable, "-I", printer.__file__, "backend", "7", "alice", "report.txt", "1", "",
                          str(job)], env={"DEVICE_URI": f"pdf:{out}", "PATH": os.environ["PATH"]},
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (out / "report.pdf").read_text() == "earlier" and victim.read_text() == "keep"
    assert (out / "report-2.pdf").read_bytes() == b"%PDF-1.4 new"
    assert sorted(p.name for p in out.iterdir()) == ["report-1.pdf", "report-2.pdf", "report.pdf"]


def _filter(tmp_path: Path, text: str, texttopdf: str | None = None) -> subprocess.CompletedProcess[bytes]:
    job = tmp_path / "job.txt"
    job.write_text(text)
    code = ("import sys; from visa.clouds.local import printer; "
            f"sys.exit(printer.text_filter(sys.argv[1:], texttopdf={texttopdf or '/usr/lib/cups/filter/texttopdf'!r}))")
    return subprocess.run([sys.executable, "-c", code, "1", "alice", "notes.txt", "1", "", str(job)],
                          capture_output=True, env={**os.environ, "TMPDIR": str(tmp_path)})


@pytest.mark.skipif(not shutil.which("pdftotext"), reason="poppler-utils")
def test_plain_text_prints_as_a_pdf_whose_text_can_be_found_again(tmp_path: Path) -> None:
    text = "Scan 42 (café, 20 µm) \\ done\n" + "".join(f"line {n}\n" for n in range(150)) + "x" * 200 + "\n"
    run = _filter(tmp_path, text)
    assert run.returncode == 0, run.stderr
    (tmp_path / "out.pdf").write_bytes(run.stdout)
    info = subprocess.run(["pdfinfo", tmp_path / "out.pdf"], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^Pages: +3$", info, re.M), info
    out = subprocess.run(["pdftotext", "-", "-"], input=run.stdout, capture_output=True, check=True).stdout.decode()
    assert "Scan 42 (café, 20 µm) \\ done" in out and "line 149" in out
    assert "x" * 90 in out and "x" * 91 not in out  # long lines wrap


def test_text_courier_cannot_show_goes_to_texttopdf(tmp_path: Path) -> None:
    # texttopdf stands for itself here: a script that says what it was given.
    fake = tmp_path / "texttopdf"
    fake.write_text("#!/bin/sh\necho \"$# $3\"; cat \"$6\"\n")
    fake.chmod(0o755)
    run = _filter(tmp_path, "snow ☃\n", str(fake))
    assert run.returncode == 0, run.stderr
    assert run.stdout == "6 notes.txt\nsnow ☃\n".encode()
