"""The browser tests' watch (tests/conftest.py, tests/browser.py): an error a page reports fails
the test, whether the page was opened by the test or by one of its fixtures (a login, a wizard)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
