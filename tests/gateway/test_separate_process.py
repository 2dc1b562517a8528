"""visa deployed as a facility runs it, on real processes: two web replicas (`visa web`) and
one separate `visa gateway`, behind the shipped nginx configuration, on PostgreSQL. A desktop open in Chromium survives the kill of the gateway
process: the gateway is started again and the page reconnects by itself, with a fresh
connect token, to the same instance; a member removed meanwhile is refused once and the page
stops trying. A desktop opened before the gateway answers connects by itself once it does."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete

from tests.gateway.conftest import PASSWORD, UID, Processes, Vnc, make_world
from tests.processes import free_port, wait_port
from visa.clock import system_clock
from visa.instances.models import InstanceMember

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.integration

# The socket the gateway's kill cuts, and the tries while it is away, are reported by
# Chromium itself (and by noVNC: "Failed when connecting"); nothing else may appear.
EXPECTED_BROWSER_ERRORS = (
    r"WebSocket connection to 'wss://[^']*/ws/desktop/",
    r"Failed when connecting: Connection closed",
    r"Failed to load resource",
)


def nginx_config(tmp: Path, port: int, webs: list[int], gateway: int | list[int]) -> Path:
    """The shipped configuration, on loopback ports with a throw-away certificate: one upstream
    line per web replica and per gateway."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.skip("no nginx")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)  # fmt: skip
    conf = (ROOT / "deploy/nginx/visa.conf").read_text()
    for kind in ("visa", "visa-content"):
        conf = conf.replace(f"/etc/ssl/{kind}/fullchain.pem", str(cert)).replace(f"/etc/ssl/{kind}/privkey.pem", str(key))
    conf = conf.replace("/var/log/nginx/", f"{tmp}/")
    conf = re.sub(r"\n\s*listen \[::\]:\d+[^;]*;", "", conf)
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{free_port()};")
    conf = conf.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl;")
    conf = conf.replace("server_name visa.example.org;", "server_name 127.0.0.1;")
    conf = conf.replace("visa-content.example.org", "instances.localhost")
    web_lines = "\n    ".join(f"server 127.0.0.1:{p} max_fails=0;" for p in webs)
    conf = conf.replace("server 127.0.0.1:8080 max_fails=0;", web_lines, 1)
    gateways = [gateway] if isinstance(gateway, int) else gateway
    gateway_lines = "\n    ".join(f"server 127.0.0.1:{p} max_fails=3 fail_timeout=10s;" for p in gateways)
    conf = conf.replace("server 127.0.0.1:8081 max_fails=3 fail_timeout=10s;", gateway_lines, 1)
    (tmp / "visa.conf").write_text(conf)
    temp = "\n".join(f"  {d}_temp_path {tmp}/{d};" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = tmp / "nginx.conf"
    main.write_text(
        f"pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\n"
        + ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\nevents {{}}\nhttp {{\n  access_log {tmp}/access.log;\n{temp}\n  include {tmp}/visa.conf;\n}}\n"
    )
    return main


def web_argv(port: int) -> list[str]:
    """A web replica as deploy/ runs it: `visa web` (WSGI, gunicorn's threaded workers)."""
    return [str(BIN / "visa"), "web", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "4",
            "--graceful-timeout", "10"]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"{proc.args} exited with {proc.returncode}"
        try:
            if httpx.get(url, timeout=2, trust_env=False, verify=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer"
        time.sleep(0.2)


def _log_in(page, base: str, username: str) -> None:
    page.goto("/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"{base}/")


def _connect_requests(access_log: Path) -> int:
    return sum("/connect " in line for line in access_log.read_text().splitlines())


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_a_desktop_survives_the_kill_of_the_gateway(db, committed_db, vnc: Vnc, tmp_path: Path) -> None:
    # committed_db: the web replicas and the gateway are other processes and read what the test wrote.
    from tests.browser import allow_errors, chromium, require_chromium

    require_chromium()
    world = make_world(db, system_clock, vnc_port=vnc.port)
    port, webs, gw = free_port(), [free_port(), free_port()], free_port()
    base = f"https://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VISA_")},
        "VISA_DATABASE_URL": db.url, "VISA_SECRET_KEY": "replicas-share-this-secret-key-0123456789",
        "VISA_DATA_DIR": str(tmp_path / "data"), "VISA_BASE_URL": base,
        "VISA_USER_CONTENT_DOMAIN": f"instances.localhost:{port}", "VISA_GATEWAY__EMBEDDED": "false",
        "VISA_SCHEDULER__ENABLED_IN_WEB": "false", "VISA_LOG_JSON": "true",
        "PROMETHEUS_MULTIPROC_DIR": "",
    }  # fmt: skip
    env.pop("PROMETHEUS_MULTIPROC_DIR")
    procs = Processes(tmp_path)
    gateway_argv = [str(BIN / "visa"), "gateway", "--host", "127.0.0.1", "--port", str(gw)]
    try:
        for web in webs:
            proc = procs.start(web_argv(web), env=env)
            _wait_http(f"http://127.0.0.1:{web}/health", proc)
        nginx = procs.start([shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(tmp_path), "-e",
                             str(tmp_path / "error.log"), "-c", str(nginx_config(tmp_path, port, webs, gw))])  # fmt: skip
        wait_port(port, nginx)
        # The web replicas serve no desktop: /ws/ exists on the gateway only.
        r = httpx.get(f"http://127.0.0.1:{webs[0]}/ws/desktop/{UID}", trust_env=False)
        assert r.status_code == 404

        allow_errors(*EXPECTED_BROWSER_ERRORS)
        with chromium() as browser:
            ctx = browser.new_context(base_url=base, ignore_https_errors=True, viewport={"width": 1024, "height": 700})
            page = ctx.new_page()
            page.set_default_timeout(30_000)
            _log_in(page, base, "owner")
            # Opened while no gateway runs (a desktop that does not answer yet): the page says so
            # and keeps trying, and connects by itself once the gateway answers.
            page.goto(f"/instances/{UID}/desktop")
            page.wait_for_selector("#overlay-text:has-text('does not answer yet')")
            assert page.get_attribute("body", "data-desktop") == "connecting" and page.is_hidden("#btn-reconnect")
            tries = _connect_requests(tmp_path / "visa-access.log")
            gateway = procs.start(gateway_argv, env=env)
            _wait_http(f"http://127.0.0.1:{gw}/health", gateway)
            r = httpx.get(f"http://127.0.0.1:{gw}/instances", trust_env=False)
            assert r.status_code == 404 and r.json()["error"] == "not_found"
            page.wait_for_selector('body[data-desktop="connected"]', state="attached", timeout=10_000)
            assert _connect_requests(tmp_path / "visa-access.log") > tries >= 1  # each try asked /connect anew
            page.reload()  # the states below are those of a page that connected at its first try
            page.evaluate("""() => {
                window.__states = [];
                new MutationObserver(() => window.__states.push(document.body.dataset.desktop))
                    .observe(document.body, { attributes: true, attributeFilter: ["data-desktop"] });
            }""")
            page.wait_for_selector('body[data-desktop="connected"]', state="attached")
            first = page.evaluate("window.visaDesktop.session.url")

            os.killpg(gateway.pid, signal.SIGKILL)
            gateway.wait(10)
            page.wait_for_selector('body[data-desktop="reconnecting"]', state="attached", timeout=10_000)
            gateway = procs.start(gateway_argv, env=env)
            _wait_http(f"http://127.0.0.1:{gw}/health", gateway)
            # Back on its own within 5 s of the gateway answering again.
            page.wait_for_selector('body[data-desktop="connected"]', state="attached", timeout=5_000)
            second = page.evaluate("window.visaDesktop.session.url")
            states = page.evaluate("window.__states")
            assert f"/ws/desktop/{UID}" in first and f"/ws/desktop/{UID}" in second  # the same instance
            assert first != second  # a fresh one-time token: the first one was spent
            assert "reconnecting" in states and not {"disconnected", "failed"} & set(states), states
            assert page.url.endswith(f"/instances/{UID}/desktop")
            assert page.is_hidden("#btn-reconnect")

            # A member removed meanwhile is not let back in: the page asks once, is refused,
            # and stops trying (the Reconnect button, no loop of attempts).
            guest_ctx = browser.new_context(base_url=base, ignore_https_errors=True)
            guest = guest_ctx.new_page()
            guest.set_default_timeout(30_000)
            _log_in(guest, base, "guest")
            guest.goto(f"/instances/{UID}/desktop")
            guest.wait_for_selector('body[data-desktop="connected"]', state="attached")
            with db.unit_of_work() as s:
                s.execute(delete(InstanceMember).where(InstanceMember.user_id == world.guest.id))
            os.killpg(gateway.pid, signal.SIGKILL)
            gateway.wait(10)
            gateway = procs.start(gateway_argv, env=env)
            _wait_http(f"http://127.0.0.1:{gw}/health", gateway)
            guest.wait_for_selector('body[data-desktop="failed"]', state="attached", timeout=15_000)
            guest.wait_for_selector("#btn-reconnect", state="visible")
            page.wait_for_selector('body[data-desktop="connected"]', state="attached", timeout=5_000)  # the owner is back
            tries = _connect_requests(tmp_path / "visa-access.log")
            time.sleep(3)  # longer than the next retry step would be
            assert _connect_requests(tmp_path / "visa-access.log") == tries
            guest_ctx.close()
            ctx.close()
    finally:
        procs.stop()
