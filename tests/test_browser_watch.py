"""The browser tests' watch (tests/conftest.py, tests/browser.py): an error a page reports fails
the test, whether the page was opened by the test or by one of its fixtures (a login, a wizard)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CASES = '''
import pytest

from tests import browser


@pytest.fixture
def opened_in_setup():
    browser._note("console error on http://visa/login: Refused to apply inline style (setup)")


def test_error_in_a_fixture(opened_in_setup):
    pass


def test_error_in_the_test():
    browser._note("console error on http://visa/: CSP violation: connect-src blocked ws://elsewhere")


def test_an_expected_error():
    browser.allow_errors("blocked ws://elsewhere")
    browser._note("console error on http://visa/: CSP violation: connect-src blocked ws://elsewhere")


def test_no_error():
    pass
'''


def test_errors_fail_the_test_whose_pages_reported_them(tmp_path: Path) -> None:
    (tmp_path / "test_cases.py").write_text(CASES)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
                        "--rootdir", str(tmp_path), str(tmp_path / "test_cases.py")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(ROOT),
                       "PATH": "/usr/bin:/bin"})
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "1 failed, 2 passed, 1 error" in out, out
    assert "ERROR" in out and "test_error_in_a_fixture" in out and "(setup)" in out


# Pages served with visa's own policy (default-src 'self': no inline style or script), each
# breaking it one way.
PAGES = {
    "/style-attribute": '<p style="color: red">inline style attribute</p>',
    "/style-element": "<style>p { color: red }</style><p>style element</p>",
    "/style-set-later": '<p id="p">set by a script</p><script src="/later.js"></script>',
    "/inline-script": "<script>document.title = 'x'</script>",
    "/clean": '<link rel="stylesheet" href="/ok.css"><p>nothing wrong</p>',
}
FILES = {
    "/later.js": ("text/javascript", 'document.getElementById("p").setAttribute("style", "color: red");'),
    "/ok.css": ("text/css", "p { color: green }"),
}


@pytest.mark.integration
def test_the_watch_catches_every_kind_of_csp_violation_in_a_real_chromium() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from tests import browser

    browser.require_chromium()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path in FILES:
                kind, body = FILES[self.path]
            else:
                kind = "text/html"
                body = f"<!doctype html><html lang='en'><title>t</title><link rel='icon' href='data:,'>{PAGES[self.path]}"
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    found: dict[str, list[str]] = {}
    try:
        with browser.chromium() as chromium:
            page = chromium.new_page()
            for path in PAGES:
                browser.ERRORS.clear()
                page.goto(url + path)
                page.wait_for_load_state("load")
                page.wait_for_timeout(200)  # violation events are dispatched asynchronously
                found[path] = list(browser.ERRORS)
            page.close()
    finally:
        browser.ERRORS.clear()
        server.shutdown()
        server.server_close()
    assert found.pop("/clean") == []
    for path, errors in found.items():
        assert any("CSP violation" in e for e in errors), (path, errors)
    assert any("style-src" in e for e in found["/style-attribute"]), found
