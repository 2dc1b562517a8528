"""Desktop reconnect time after the gateway process is killed.

    python -m bench.reconnect [--kills 5] [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

The stack as a facility runs it, on loopback: two web replicas (``visa web``), one
``visa gateway``, the shipped nginx configuration
in front (HTTPS with a throw-away certificate), a real Xtigervnc desktop, and Chromium on
the desktop page. Each round: SIGKILL the gateway, start it again at once (as systemd's
``Restart=always``, ``RestartSec=1`` would, minus that second), and time, from the kill:

* ``shown``: the page shows "Reconnecting…";
* ``gateway``: the new gateway answers ``/health`` (process start-up, mostly Python imports);
* ``connected``: the page is connected again, with a fresh token, to the same instance.

Database: a throw-away SQLite file, or with ``--postgres`` (a server URL) a database of its
own created on that server and dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from tests.gateway.test_separate_process import (  # the shipped nginx on loopback, as the test runs it
    nginx_config,
    web_argv,
)
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SECRET = "bench-vnc-secret-0123"
PASSWORD = "bench-password-0123"
UID = "rc0000000001"




def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2, trust_env=False, verify=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(url)
        time.sleep(0.02)


def prepare(database_url: str, vnc_port: int) -> None:
    from werkzeug.security import generate_password_hash

    import visa.models  # noqa: F401  (every mapped class known before the first query)
    from visa.catalogue.models import Flavour, Image, ImageProtocol, Plan, Protocol
    from visa.clouds.models import Cloud
    from visa.db import Database
    from visa.instances.models import Instance, InstanceMember, InstanceState, MemberRole
    from visa.migrate import upgrade
    from visa.users.models import User

    database = Database(database_url)
    upgrade(database.engine)
    now = datetime.now(UTC)
    with database.unit_of_work() as s:
        user = User(username="bench", full_name="Bench", instance_quota=2, active=True, created_at=now,
                    password_hash=generate_password_hash(PASSWORD))  # fmt: skip
        image = Image(name="desktop", environment="Desktop", version="1", cloud_image_ref="x", visible=True, options={})
        image.protocols.append(ImageProtocol(protocol=Protocol.VNC, port=5901))
        flavour = Flavour(name="s", cores=1, memory_mb=1024, cloud_flavour_ref="s", gpu_count=0, visible=True)
        plan = Plan(image=image, flavour=flavour, preset=True, enabled=True)
        cloud = Cloud(name="local", kind="local", config={}, enabled=True, created_at=now)
        instance = Instance(
            uid=UID, name="bench", owner=user, plan=plan, cloud=cloud, state=InstanceState.ACTIVE,
            address="127.0.0.1", secret=SECRET, created_at=now, terminates_at=now + timedelta(days=1),
            provider_state={"ports": {"VNC": vnc_port}},
        )  # fmt: skip
        instance.members = [InstanceMember(user=user, role=MemberRole.OWNER, created_at=now)]
        s.add(instance)
    database.dispose()


def run(args: argparse.Namespace) -> dict:
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="visa-bench-reconnect-"))
    procs: list[subprocess.Popen] = []
    created: list[str] = []

    def start(argv: list[str], **kw: object) -> subprocess.Popen:
        log = open(tmp / f"{Path(argv[0]).name}-{len(procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kw)  # type: ignore[call-overload]
        procs.append(proc)
        return proc

    try:
        passwd = tmp / "passwd"
        passwd.write_bytes(subprocess.run(["vncpasswd", "-f"], input=SECRET.encode(), capture_output=True,
                                          check=True).stdout)  # fmt: skip
        vnc = free_port()
        start(["Xtigervnc", f":{40 + os.getpid() % 50}", "-geometry", "1280x800", "-depth", "24", "-rfbport",
               str(vnc), "-localhost=1", "-SecurityTypes", "VncAuth", "-PasswordFile", str(passwd),
               "-AlwaysShared=1", "-nolisten", "tcp"])  # fmt: skip
        database_url = f"sqlite:///{tmp / 'visa.db'}"
        if args.postgres:
            database_url = _create_database(args.postgres)
            created.append(database_url)
        prepare(database_url, vnc)
        port, webs, gw = free_port(), [free_port(), free_port()], free_port()
        base = f"https://127.0.0.1:{port}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("VISA_")},
            "VISA_DATABASE_URL": database_url, "VISA_SECRET_KEY": "bench-" + "k" * 40, "VISA_DATA_DIR": str(tmp),
            "VISA_BASE_URL": base, "VISA_USER_CONTENT_DOMAIN": f"instances.localhost:{port}",
            "VISA_GATEWAY__EMBEDDED": "false", "VISA_SCHEDULER__ENABLED_IN_WEB": "false",
        }  # fmt: skip
        for web in webs:
            p = start(web_argv(web), env=env)
            _wait_http(f"http://127.0.0.1:{web}/health", p)
        gateway_argv = [str(BIN / "visa"), "gateway", "--port", str(gw)]
        gateway = start(gateway_argv, env=env)
        _wait_http(f"http://127.0.0.1:{gw}/health", gateway)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        start([nginx, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(nginx_config(tmp, port, webs, gw))])
        time.sleep(0.5)

        rounds = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                         args=["--no-sandbox", "--disable-gpu"])  # fmt: skip
            page = browser.new_context(base_url=base, ignore_https_errors=True).new_page()
            page.goto("/login")
            page.fill("#username", "bench")
            page.fill("#password", PASSWORD)
            page.click("#login-form button[type=submit]")
            page.wait_for_url(f"{base}/")
            page.goto(f"/instances/{UID}/desktop")
            page.wait_for_selector('body[data-desktop="connected"]', state="attached", timeout=30_000)
            for _ in range(args.kills):
                time.sleep(1)
                killed = time.monotonic()
                os.killpg(gateway.pid, signal.SIGKILL)
                gateway.wait()
                gateway = start(gateway_argv, env=env)
                page.wait_for_selector('body[data-desktop="reconnecting"]', state="attached", timeout=10_000)
                shown = time.monotonic() - killed
                _wait_http(f"http://127.0.0.1:{gw}/health", gateway)
                up = time.monotonic() - killed
                page.wait_for_selector('body[data-desktop="connected"]', state="attached", timeout=60_000)
                back = time.monotonic() - killed
                rounds.append({"shown_s": round(shown, 3), "gateway_s": round(up, 3), "connected_s": round(back, 3),
                               "after_gateway_s": round(back - up, 3)})  # fmt: skip
                print(f"  kill {len(rounds)}: reconnecting shown {shown:.2f} s, gateway up {up:.2f} s, "
                      f"desktop back {back:.2f} s ({back - up:.2f} s after the gateway answered)", flush=True)
            browser.close()
        back = [r["connected_s"] for r in rounds]
        after = [r["after_gateway_s"] for r in rounds]
        return {"database": database_url.split(":", 1)[0], "kills": rounds,
                "connected_median_s": round(statistics.median(back), 3), "connected_max_s": round(max(back), 3),
                "after_gateway_median_s": round(statistics.median(after), 3)}  # fmt: skip
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
        for url in created:
            _drop_database(args.postgres, url)


def _create_database(server: str) -> str:
    import uuid

    from sqlalchemy import create_engine, make_url, text

    name = f"visa_bench_reconnect_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def _drop_database(server: str, url: str) -> None:
    from sqlalchemy import create_engine, make_url, text

    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--postgres", default=None,
                        help="a PostgreSQL server URL: the bench creates (and drops) a database of its own there")
    args = parser.parse_args()
    print(json.dumps(run(args), indent=1))


if __name__ == "__main__":
    main()
