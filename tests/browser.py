"""What the browser tests share: a real visa served by uvicorn, its CLI, and Debian's Chromium.

Chromium is the Debian package (never a browser downloaded by Playwright), started with the
flags a closed network needs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VISA = str(Path(sys.executable).with_name("visa"))


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    r = subprocess.run([VISA, *args], env=env, capture_output=True, text=True, timeout=120, input=stdin)
    assert r.returncode == 0, f"visa {' '.join(args)}: {r.stdout}{r.stderr}"
    return r.stdout


def visa_env(data_dir: Path, port: int, **settings: str) -> dict[str, str]:
    """This process's environment without its VISA_ settings, plus a fresh data dir and ``settings``."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("VISA_")},
        "VISA_DATA_DIR": str(data_dir),
        "VISA_BASE_URL": f"http://127.0.0.1:{port}",
        **settings,
    }


@contextmanager
def served(env: dict[str, str], port: int, log: Path) -> Iterator[str]:
    """visa as `visa run` serves it (uvicorn, the ASGI app), until the block ends; yields its URL."""
    argv = [sys.executable, "-m", "uvicorn", "visa.asgi:create_asgi_app", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--ws-per-message-deflate", "false"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "visa did not answer in 60 s:\n" + log.read_text()[-3000:]
            time.sleep(0.3)
        yield url
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
