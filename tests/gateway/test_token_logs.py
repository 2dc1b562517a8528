"""One-time tokens never reach the logs of visa as `visa run` serves it (uvicorn writes a
websocket's path with its query string)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.browser import cli, served, visa_env
from tests.processes import free_port

pytestmark = pytest.mark.timeout(120)
TOKEN = "Tok3n-that-must-not-be-logged_0123456789abcdef"


def test_connect_tokens_are_not_written_to_the_logs(tmp_path: Path) -> None:
    port = free_port()
    env = visa_env(
        tmp_path / "var", port, VISA_SECRET_KEY="log-test-secret", VISA_SCHEDULER__ENABLED_IN_WEB="false"
    )
    cli(env, "init")
    log = tmp_path / "server.log"
    with served(env, port, log) as url:
        ws = url.replace("http://", "ws://")
        for origin in ("http://evil.example", None):  # cross-site, then same-site with a bad token
            with pytest.raises(InvalidStatus) as info:
                connect(f"{ws}/ws/desktop/abc123?token={TOKEN}", origin=origin, open_timeout=10).close()  # type: ignore[arg-type]
            assert info.value.response.status_code in (401, 403)
            with pytest.raises(InvalidStatus) as info:  # a view link's socket
                connect(f"{ws}/ws/view?token={TOKEN}", origin=origin, open_timeout=10).close()  # type: ignore[arg-type]
            assert info.value.response.status_code == 403
        assert httpx.get(f"{url}/view/{TOKEN}").status_code == 404  # a view link's page
        content = f"abc123.instances.localhost:{port}"
        r = httpx.get(f"{url}/_visa/login?token={TOKEN}&next=/jupyter/abc123/lab", headers={"Host": content})
    text = log.read_text()
    # The lines were written, without the token.
    assert '"WebSocket /ws/desktop/abc123?token=[redacted]" 403' in text, text[-3000:]
    assert '"WebSocket /ws/view?token=[redacted]" 403' in text and "/view/[redacted]" in text, text[-3000:]
    assert TOKEN not in text
    assert r.status_code == 401  # the user-content login refused it, and the log kept nothing


def test_the_redacting_filter_sits_on_the_handler() -> None:
    code = (
        "import logging, visa.logs as l; l.configure(False); "
        "logging.getLogger('uvicorn.error').info('%s - \"WebSocket %s\" 403', '1.2.3.4', '/ws/desktop/u?token=SECRET1')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "token=[redacted]" in r.stderr and "SECRET1" not in r.stderr, r.stderr


INVITE = "Inv1te-that-must-not-be-logged_0123456789ab"


@pytest.mark.parametrize("json_lines", [False, True], ids=["plain", "json"])
def test_invitation_tokens_are_not_written_to_the_logs(tmp_path: Path, json_lines: bool) -> None:
    """An invitation link opens a door: its token is redacted from the access log and every other line,
    in its path and in the login page's ``next`` it is sent on to."""
    port = free_port()
    env = visa_env(
        tmp_path / "var", port, VISA_SECRET_KEY="log-test-secret", VISA_SCHEDULER__ENABLED_IN_WEB="false",
        VISA_LOG_JSON="true" if json_lines else "false",
    )
    cli(env, "init")
    log = tmp_path / "server.log"
    with served(env, port, log) as url:
        r = httpx.get(f"{url}/invite/{INVITE}")
        assert r.status_code in (302, 303) and INVITE in r.headers["location"]  # to the login, which comes back
        assert httpx.get(f"{url}/login", params={"next": f"/invite/{INVITE}"}).status_code == 200
        assert httpx.get(f"{url}/invite/{INVITE.upper()}/x").status_code in (302, 303, 404)
    text = log.read_text()
    assert "/invite/[redacted]" in text, text[-3000:]
    assert INVITE not in text and INVITE.upper() not in text, text[-3000:]
