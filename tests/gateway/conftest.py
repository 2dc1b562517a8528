"""Fixtures of the gateway tests: real servers only.

* ``vnc``: a real Xtigervnc (VncAuth with the instance secret) with an xterm that writes
  every key it receives to a file, so a test can see what reached the desktop;
* ``jupyter``: a real JupyterLab under ``/jupyter/<uid>/`` with the secret as token, with an
  attacker's page planted in it (``/jupyter/<uid>/static/attack.html``);
* ``live``: the ASGI app (gateway + Flask) served by uvicorn on a loopback port in a thread,
  so browsers' real websockets are used.

Every process a fixture starts carries a marker in its environment; teardown kills any
process that still carries it and fails the test run if one was left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from a2wsgi import WSGIMiddleware
from starlette.applications import Starlette
from starlette.routing import Mount

from tests.factories import make_cloud, make_flavour, make_image, make_plan, make_user
from tests.processes import free_port, pids_with_env, wait_port
from visa.catalogue.models import Protocol
from visa.gateway.common import GatewayConfig
from visa.gateway.routes import gateway_routes
from visa.instances.models import Instance, InstanceHome, InstanceMember, InstanceState, MemberRole
from visa.users.models import User

SECRET = "gw-Secret-9f3k2L-long-enough"
UID = "gw0000000001"
OTHER_UID = "gw0000000002"
PASSWORD = "correct horse battery"
MARKER = "VISA_GATEWAY_TEST_PROCESS"
PLANTED = Path(__file__).parent / "planted"






def _marked(root: Path) -> list[int]:
    wanted = f"{MARKER}={root}".encode()
    return pids_with_env(wanted.__eq__)


class Processes:
    """Processes started by a fixture, all ended at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.env = {**os.environ, MARKER: str(root), "HOME": str(root)}

    def start(self, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        env = {**self.env, **kwargs.pop("env", {})}
        log = open(self.root / f"{Path(argv[0]).name}-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
        )
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        left = _marked(self.root)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"processes left behind: {left}"


_KEY_LOGGER = textwrap.dedent(
    """
    import os, sys, tty
    tty.setraw(0)
    with open(sys.argv[1], "ab", buffering=0) as out:
        while True:
            data = os.read(0, 64)
            if not data:
                break
            out.write(data)
    """
)


@dataclass
class Vnc:
    port: int
    display: int
    keys: Path
    env: dict[str, str]

    def typed(self) -> bytes:
        return self.keys.read_bytes() if self.keys.exists() else b""


@pytest.fixture(scope="module")
def vnc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vnc]:
    missing = [p for p in ("Xtigervnc", "vncpasswd", "xterm", "xsetroot", "xdotool") if not shutil.which(p)]
    if missing:
        if os.environ.get("CI"):
            raise RuntimeError(f"CI lacks {missing}: deploy/system-packages.txt is not installed")
        pytest.skip(f"desktop programs missing: {missing}")
    root = tmp_path_factory.mktemp("vnc")
    procs = Processes(root)
    try:
        password_file = root / "passwd"
        password_file.write_bytes(
            subprocess.run(["vncpasswd", "-f"], input=SECRET.encode(), capture_output=True, check=True).stdout
        )
        port = free_port()
        read_fd, write_fd = os.pipe()
        procs.start(
            [
                "Xtigervnc", "-displayfd", str(write_fd), "-nolisten", "tcp", "-geometry", "640x480", "-depth", "24",
                "-rfbport", str(port), "-interface", "127.0.0.1", "-localhost=1", "-SecurityTypes", "VncAuth",
                "-PasswordFile", str(password_file), "-AlwaysShared=1", "-desktop", "gateway-test",
            ],
            pass_fds=(write_fd,),
        )  # fmt: skip
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            display = int(pipe.readline().strip())
        env = {"DISPLAY": f":{display}"}
        subprocess.run(["xsetroot", "-solid", "#2f4f6f"], env={**procs.env, **env}, check=True, timeout=10)
        keys = root / "keys"
        # A full-screen terminal that writes every byte it is typed to a file.
        procs.start(
            ["xterm", "-geometry", "80x24+0+0", "-e", sys.executable, "-c", _KEY_LOGGER, str(keys)], env=env
        )
        deadline = time.monotonic() + 15
        while not subprocess.run(
            ["xdotool", "search", "--onlyvisible", "--class", "xterm"],
            env={**procs.env, **env},
            capture_output=True,
        ).stdout.strip():
            assert time.monotonic() < deadline, "xterm did not appear"
            time.sleep(0.1)
        subprocess.run(["xdotool", "mousemove", "100", "100"], env={**procs.env, **env}, check=True)
        wait_port(port)
        yield Vnc(port, display, keys, env)
    finally:
        procs.stop()


@dataclass
class Jupyter:
    port: int


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jupyter]:
    root = tmp_path_factory.mktemp("jupyter")
    procs = Processes(root)
    try:
        # What a member with a shell can do to the owner's Jupyter: serve a page of their own
        # (the user's Jupyter configuration lives in the instance's home).
        (root / "config").mkdir()
        (root / "config" / "jupyter_server_config.py").write_text(
            f"c.ServerApp.extra_static_paths = [{str(PLANTED)!r}]\n"
        )
        port = free_port()
        proc = procs.start(
            [
                sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                "--port-retries=0", f"--ServerApp.base_url=/jupyter/{UID}/", f"--ServerApp.root_dir={root}",
                "--ServerApp.allow_remote_access=True", "--ServerApp.allow_root=True", "--LabApp.news_url=",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            env={
                "JUPYTER_TOKEN": SECRET, "JUPYTER_CONFIG_DIR": str(root / "config"),
                "JUPYTER_RUNTIME_DIR": str(root / "runtime"), "JUPYTER_DATA_DIR": str(root / "data"),
                "IPYTHONDIR": str(root / "ipython"),
            },
        )  # fmt: skip
        wait_port(port, proc, timeout=90)
        # The port opens before the server answers; wait for an authenticated answer.
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(
                    f"http://127.0.0.1:{port}/jupyter/{UID}/api/status",
                    headers={"Authorization": f"token {SECRET}"}, trust_env=False,
                )  # fmt: skip
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "JupyterLab did not answer"
            time.sleep(0.2)
        yield Jupyter(port)
    finally:
        procs.stop()


@dataclass
class Live:
    """The running ASGI app and what the tests need to talk to it."""

    base: str
    ws_base: str
    app: Any
    db: Any
    clock: Any

    def http(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base, trust_env=False, timeout=30, **kwargs)

    @contextlib.contextmanager
    def login(self, username: str) -> Iterator[httpx.Client]:
        """A client with the user's session cookie and CSRF header, like the pages."""
        with self.http() as client:
            r = client.post("/api/login", json={"username": username, "password": PASSWORD})
            assert r.status_code == 200, r.text
            client.headers["X-CSRF-Token"] = r.json()["csrf_token"]
            yield client

    def content(self, uid: str = "") -> str:
        """The user-content host of instance ``uid`` (Host header value)."""
        return f"{uid or UID}.instances.localhost:{self.base.rsplit(':', 1)[1]}"

    @contextlib.contextmanager
    def open_lab(self, client: httpx.Client, uid: str = "", path: str = "lab") -> Iterator[httpx.Client]:
        """Follow visa's way into the lab: a client of the user-content host with its cookie.
        (httpx connects to 127.0.0.1 and names the host in the Host header: no DNS needed.)"""
        r = client.get(f"/jupyter/{uid or UID}/{path}")
        assert r.status_code == 303, r.text
        location = httpx.URL(r.headers["location"])
        assert location.host == self.content(uid).split(":")[0], location
        with self.http(headers={"Host": self.content(uid)}) as lab:
            answer = lab.get(location.raw_path.decode())
            assert answer.status_code == 303, answer.text
            yield lab

    def cookie_header(self, client: httpx.Client) -> str:
        return "; ".join(f"{k}={v}" for k, v in client.cookies.items())


GATEWAY_CONFIG = GatewayConfig(
    activity_seconds=0.3,
    connect_timeout=5,
    handshake_timeout=10,
    auth_cache_seconds=0,
    ws_max_bytes=1024 * 1024,
)


@pytest.fixture
def gateway_config() -> GatewayConfig:
    """The gateway's timings; a test module may override this fixture."""
    return GATEWAY_CONFIG


@pytest.fixture
def live(app, committed_db, clock, gateway_config: GatewayConfig) -> Iterator[Live]:
    """Served from a thread: the data is committed (``committed_db``)."""
    db = committed_db
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # Instances' web content on <uid>.instances.localhost:<port>, visa on 127.0.0.1:<port>.
    app.extensions["visa"].settings.base_url = f"http://127.0.0.1:{port}"
    app.extensions["visa"].settings.user_content_domain = f"instances.localhost:{port}"
    asgi = Starlette(
        routes=[*gateway_routes(app, gateway_config), Mount("/", app=WSGIMiddleware(app, workers=4))]
    )
    config = uvicorn.Config(
        asgi,
        log_level="warning",
        lifespan="off",
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=2,
        ws="visa.gateway.wsprotocol:RelayWebSocketProtocol",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield Live(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", app, db, clock)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


@dataclass
class World:
    owner: User
    guest: User
    user: User
    stranger: User
    instance: Instance
    other: Instance


def make_world(db, clock, vnc_port: int = 1, jupyter_port: int = 1) -> World:
    """An ACTIVE instance with an owner, a USER and a GUEST, a stranger, and a second instance
    of the stranger's; their desktop and Jupyter are the fixtures' servers."""
    with db.unit_of_work() as s:
        owner, guest, user, stranger = (
            make_user(s, clock, name, password=PASSWORD) for name in ("owner", "guest", "helper", "stranger")
        )
        image = make_image(s, "desktop", {Protocol.VNC: 5901, Protocol.JUPYTER: 8888})
        plan = make_plan(s, image, make_flavour(s, "small"))
        cloud = make_cloud(s, clock)

        def instance(uid: str, who: User, members: dict[User, MemberRole]) -> Instance:
            inst = Instance(
                uid=uid, name=f"machine {uid}", owner=who, plan=plan, cloud=cloud, state=InstanceState.ACTIVE,
                address="127.0.0.1", secret=SECRET, created_at=clock.now(),
                terminates_at=clock.now() + timedelta(days=14),
                provider_state={"ports": {"VNC": vnc_port, "JUPYTER": jupyter_port}},
                home=InstanceHome.OWN,  # its USER member acts in it
            )  # fmt: skip
            inst.members = [
                InstanceMember(user=u, role=r, created_at=clock.now()) for u, r in members.items()
            ]
            s.add(inst)
            return inst

        main = instance(UID, owner, {owner: MemberRole.OWNER, guest: MemberRole.GUEST, user: MemberRole.USER})
        other = instance(OTHER_UID, stranger, {stranger: MemberRole.OWNER})
        s.flush()
    return World(owner, guest, user, stranger, main, other)
