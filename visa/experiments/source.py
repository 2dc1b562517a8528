"""The user office's export as the facility's extractor serves it: a command's output or a URL's body.

Read with a bound (``MAX_FILE_BYTES``) and a time limit; any failure is an ``ImportFileError``
naming the source, so a scheduled import fails whole, as a bad file does.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import httpx

from visa.experiments.importer import MAX_FILE_BYTES, ImportData, ImportFileError, parse_text
from visa.settings import ImportSourceSettings


def source_name(source: ImportSourceSettings) -> str:
    """The source as messages and the audit log name it: never a URL's query or credentials."""
    if source.url is not None:
        parts = urlsplit(source.url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    assert source.command is not None
    return "command " + " ".join(source.command)[:200]


def _decode(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFileError([f"{name}: not UTF-8 text: {exc.reason} at byte {exc.start}"]) from None


def _run(command: list[str], timeout: float, name: str) -> bytes:
    with tempfile.TemporaryFile() as errors:
        try:
            # visa's own settings (its secrets among them) are not the extractor's business.
            env = {k: v for k, v in os.environ.items() if not k.startswith("VISA_")}
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, env=env)
        except OSError as exc:
            raise ImportFileError([f"{name}: cannot run: {exc.strerror or exc}"]) from None
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            proc.kill()

        timer = threading.Timer(timeout, expire)
        timer.start()
        out, size, too_big = [], 0, False
        try:
            assert proc.stdout is not None
            while chunk := proc.stdout.read(65536):
                size += len(chunk)
                if size > MAX_FILE_BYTES:
                    too_big = True
                    break
                out.append(chunk)
        finally:
            if too_big:
                proc.kill()
            code = proc.wait()  # one that never ends: the timer kills it
            timer.cancel()
            proc.stdout.close()  # type: ignore[union-attr]
        errors.seek(0)
        tail = errors.read()[-2000:].decode("utf-8", "replace").strip()
    if too_big:
        raise ImportFileError([f"{name}: output larger than {MAX_FILE_BYTES} bytes"])
    if code != 0:
        why = f"gave no answer within {timeout:g} s" if expired.is_set() else f"exited with status {code}"
        raise ImportFileError([f"{name}: {why}" + (f": {tail.splitlines()[-1][:300]}" if tail else "")])
    return b"".join(out)


def _get(source: ImportSourceSettings, name: str) -> bytes:
    assert source.url is not None
    deadline = time.monotonic() + source.timeout_seconds
    try:
        with httpx.stream("GET", source.url, headers=source.headers, timeout=source.timeout_seconds,
                          follow_redirects=True) as response:
            if response.status_code != 200:
                raise ImportFileError([f"{name}: HTTP {response.status_code} {response.reason_phrase}"])
            out, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_FILE_BYTES:
                    raise ImportFileError([f"{name}: larger than {MAX_FILE_BYTES} bytes"])
                if time.monotonic() > deadline:  # a slow trickle is bounded too, not each read alone
                    raise ImportFileError([f"{name}: not received within {source.timeout_seconds:g} s"])
                out.append(chunk)
            return b"".join(out)
    except httpx.HTTPError as exc:
        raise ImportFileError([f"{name}: {type(exc).__name__}: {str(exc)[:300]}"]) from None


def fetch(source: ImportSourceSettings) -> ImportData:
    """The export the source serves now, read and validated (nothing is written)."""
    name = source_name(source)
    if source.command is not None:
        raw = _run(source.command, source.timeout_seconds, name)
    else:
        raw = _get(source, name)
    return parse_text(_decode(raw, name), source.format, name)
