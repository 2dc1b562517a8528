"""A machine that offers RDP and no VNC, shown through visa's RDP bridge, against a real xrdp.

xrdp (Debian's, started on a loopback port with its session manager in the foreground) stands in
for the machine: a throwaway unix account logs in, and its session is a full-screen xterm of a
colour of its own. Through Chromium and the gateway (the desktop page) that colour appears and
what is typed reaches the shell; the password is on no command line and in no environment; and
the bridge, which speaks to the hostile RDP server, sees none of visa's files and reaches no
network but the machine's RDP port.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import grp
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.factories import make_cloud, make_flavour, make_image, make_plan, make_user
from tests.gateway.conftest import PASSWORD, UID, Live, Processes
from tests.processes import free_port, wait_port
from visa.catalogue.models import Protocol
from visa.instances.models import Instance, InstanceMember, InstanceState, MemberRole

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ACCOUNT = "visardpowner"  # the throwaway unix account, and the visa user who owns the machine
COLOUR = (200, 30, 100)  # the remote xterm's background
SESMAN_PORT = 3350  # xrdp finds its session manager at the port of /etc/xrdp/sesman.ini

XRDP_INI = """[Globals]
ini_version=1
fork=false
require_credentials=true
port=tcp://127.0.0.1:{port}
security_layer=negotiate
crypt_level=high
certificate=
key_file=
autorun=Xvnc
allow_channels=true
max_bpp=24
new_cursors=true
use_fastpath=both
[Logging]
LogFile={root}/xrdp.log
LogLevel=INFO
EnableSyslog=false
[Channels]
rdpdr=false
rdpsnd=false
drdynvc=false
cliprdr=false
rail=false
xrdpvr=false
[Xvnc]
name=Xvnc
lib=libvnc.so
username=ask
password=ask
ip=127.0.0.1
port=-1
"""


@dataclass
class Xrdp:
    port: int
    username: str
    password: str
    home: Path


def _account_pids(uid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry.name}").st_uid == uid:
                    found.append(int(entry.name))
    return found


def _remove_account() -> None:
    try:
        uid = pwd.getpwnam(ACCOUNT).pw_uid
    except KeyError:
        return
    for pid in _account_pids(uid):  # the session xrdp started for it
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    subprocess.run(["userdel", "--remove", ACCOUNT], capture_output=True, check=False)


def _host_leftovers() -> set[str]:
    """What an xrdp session and a bridge may leave on the host: xrdp's runtime files (sockets,
    pid files), X servers' locks and sockets, the bridges' directories."""
    found: set[str] = set()
    for pattern in ("/run/xrdp/**", "/run/xrdp*.pid", "/var/run/xrdp*.pid", "/tmp/.X*-lock", "/tmp/.X11-unix/*",
                    f"{tempfile.gettempdir()}/visa-rdp-*"):  # fmt: skip
        found.update(p for p in glob.glob(pattern, recursive=True, include_hidden=True) if p != "/run/xrdp/")
    return found


def _account_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="module")
def xrdp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Xrdp]:
    """xrdp with a throwaway account; at the end the host is as it was: the account, the bridge's
    account (when the tests made it), and what xrdp and the X servers left are gone."""
    from visa.gateway import rdp

    needed = ("xrdp", "xrdp-sesman", "xfreerdp", "Xtigervnc", "Xvnc", "xterm", "bwrap", "useradd")
    missing = [p for p in needed if not shutil.which(p)]
    if missing:
        if os.environ.get("CI"):
            raise RuntimeError(f"CI lacks {missing}: deploy/system-packages.txt is not installed")
        pytest.skip(f"RDP programs missing: {missing}")
    if os.geteuid() != 0:
        pytest.skip("xrdp's session manager logs unix accounts in: root only")
    with socket.socket(socket.AF_INET6) as probe:
        if probe.connect_ex(("::1", SESMAN_PORT)) == 0:
            pytest.skip(f"port {SESMAN_PORT} is taken (xrdp-sesman's service running?)")
    root = tmp_path_factory.mktemp("xrdp")
    procs = Processes(root)
    _remove_account()
    bridge_account_before = _account_exists(rdp.ACCOUNT)
    before = _host_leftovers()
    password = "Rdp-" + secrets.token_urlsafe(18)
    try:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", ACCOUNT], check=True, capture_output=True)
        subprocess.run(["chpasswd"], input=f"{ACCOUNT}:{password}".encode(), check=True, capture_output=True)
        entry = pwd.getpwnam(ACCOUNT)
        home = Path(entry.pw_dir)
        colour = "#{:02x}{:02x}{:02x}".format(*COLOUR)
        (home / ".xsession").write_text(f"exec xterm -geometry 200x70+0+0 -bg '{colour}' -fg white\n")
        os.chown(home / ".xsession", entry.pw_uid, entry.pw_gid)
        port = free_port()
        (root / "xrdp.ini").write_text(XRDP_INI.format(port=port, root=root))
        sesman = Path("/etc/xrdp/sesman.ini").read_text()
        sesman = sesman.replace("LogFile=xrdp-sesman.log", f"LogFile={root}/sesman.log")
        (root / "sesman.ini").write_text(sesman.replace("EnableSyslog=true", "EnableSyslog=false"))
        procs.start(["xrdp-sesman", "--nodaemon", "--config", str(root / "sesman.ini")])
        server = procs.start(["xrdp", "--nodaemon", "--config", str(root / "xrdp.ini")])
        wait_port(port, server)
        yield Xrdp(port, ACCOUNT, password, home)
    finally:
        _remove_account()  # the session xrdp started first: its processes carry the fixture's marker
        procs.stop()
        # A bridge removes its own directory: one left is the product's fault, not the fixture's.
        bridge_dirs = [p for p in _host_leftovers() - before if "/visa-rdp-" in p]
        for path in sorted(_host_leftovers() - before, reverse=True):  # a directory's entries first
            with contextlib.suppress(OSError):
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
        if not bridge_account_before and _account_exists(rdp.ACCOUNT):
            for pid in _bridge_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            subprocess.run(["userdel", rdp.ACCOUNT], capture_output=True, check=True)
            subprocess.run(["groupdel", rdp.ACCOUNT], capture_output=True, check=False)  # where userdel kept it
        assert not bridge_dirs, f"bridges left their directories: {bridge_dirs}"
    assert not _account_exists(ACCOUNT)
    assert _account_exists(rdp.ACCOUNT) == bridge_account_before
    if not bridge_account_before:
        with pytest.raises(KeyError):
            grp.getgrnam(rdp.ACCOUNT)
    assert _host_leftovers() <= before, sorted(_host_leftovers() - before)


def rdp_world(live: Live, xrdp: Xrdp, *, secret: str | None = None) -> None:
    """An ACTIVE instance of an image that offers RDP only, whose RDP answers at xrdp's port;
    its owner is the unix account's namesake and its secret the account's password (unless
    ``secret``); its keyboard is German (z and y swapped from US English)."""
    clock = live.clock
    with live.db.unit_of_work() as s:
        owner = make_user(s, clock, xrdp.username, password=PASSWORD)
        image = make_image(s, "windows", {Protocol.RDP: 3389})
        plan = make_plan(s, image, make_flavour(s, "small"))
        inst = Instance(
            uid=UID, name="analysis on windows", owner=owner, plan=plan, cloud=make_cloud(s, clock),
            state=InstanceState.ACTIVE, address="127.0.0.1", secret=secret or xrdp.password, created_at=clock.now(),
            terminates_at=clock.now() + timedelta(days=14), provider_state={"ports": {"RDP": xrdp.port}},
            screen_width=1024, screen_height=700, keyboard_layout="de-de",
        )  # fmt: skip
        inst.members = [InstanceMember(user=owner, role=MemberRole.OWNER, created_at=clock.now())]
        s.add(inst)


def _processes_showing(secret: str) -> list[str]:
    """Every process of this host whose command line or environment holds ``secret``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        for part in ("cmdline", "environ"):
            with contextlib.suppress(OSError):
                if secret.encode() in Path(f"/proc/{entry.name}/{part}").read_bytes():
                    found.append(f"{entry.name} {part}")
    return found


COLOUR_SHARE = """([r, g, b]) => {
  const c = document.querySelector('#screen canvas');
  if (!c || !c.width) return 0;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let hit = 0, n = 0;
  for (let i = 0; i < d.length; i += 4 * 17) {
    n++;
    if (Math.abs(d[i] - r) < 12 && Math.abs(d[i + 1] - g) < 12 && Math.abs(d[i + 2] - b) < 12) hit++;
  }
  return hit / n;
}"""


def _open_desktop(browser: Any, live: Live, xrdp: Xrdp, *, timeout: int) -> Any:
    """The owner logged in with visa's login form, on the instance's desktop page (a context of its own)."""
    ctx = browser.new_context(base_url=live.base, viewport={"width": 1280, "height": 860})
    page = ctx.new_page()
    page.set_default_timeout(timeout)
    page.goto("/login")
    page.fill("#username", xrdp.username)
    page.fill("#password", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"{live.base}/")
    page.goto(f"/instances/{UID}")
    page.click('[data-testid="open-desktop"]')
    page.wait_for_url("**/desktop")
    return page


def test_an_rdp_machine_is_a_desktop_in_the_browser(live: Live, xrdp: Xrdp) -> None:
    from tests.browser import allow_errors, chromium, require_chromium

    require_chromium()
    # This app serves no event stream (visa's ASGI app does, not the fixture's), and the machine
    # has no SSH for the instance page's file list.
    allow_errors(r"status of 404 .*/api/events", r"status of 502 .*/api/instances/[^/]+/files")
    rdp_world(live, xrdp)
    typed = xrdp.home / "typed.txt"
    with contextlib.suppress(FileNotFoundError):
        typed.unlink()
    with chromium() as browser:
        page = _open_desktop(browser, live, xrdp, timeout=30_000)
        page.wait_for_selector('body[data-desktop="connected"]', state="attached")
        # Pixels of the remote session: its xterm's colour fills most of the screen.
        share = 0.0
        deadline = time.monotonic() + 30
        while share < 0.3 and time.monotonic() < deadline:
            time.sleep(0.3)
            share = page.evaluate(COLOUR_SHARE, list(COLOUR))
        assert share >= 0.3, share
        # The password reached FreeRDP through a pipe: no command line nor environment shows it.
        assert _processes_showing(xrdp.password) == []
        # Typed input reaches the remote shell, as typed in the instance's layout (German): with a
        # layout lost on the way (FreeRDP's /kbd:, the bridge's X server) z and y would swap.
        page.locator("#screen canvas").click(position={"x": 300, "y": 200})
        page.keyboard.type("tee typed.txt")
        page.keyboard.press("Enter")
        page.keyboard.type("zy typed through rdp")
        page.keyboard.press("Enter")
        page.keyboard.press("Control+d")
        deadline = time.monotonic() + 20
        # tee may read the line in pieces (typed while the shell still held the terminal): its end.
        while not (typed.exists() and typed.read_text().endswith("\n")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert typed.exists() and typed.read_text() == "zy typed through rdp\n"
        page.context.close()
    # The bridge ends with the connection.
    deadline = time.monotonic() + 10
    while _bridge_pids() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _bridge_pids() == []


def _bridge_pids() -> list[int]:
    from visa.gateway import rdp

    try:
        uid = pwd.getpwnam(rdp.ACCOUNT).pw_uid
    except KeyError:
        return []
    return _account_pids(uid)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{entry.name}/stat").read_text()
                children.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += children.get(current, [])
    return out


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


# Run in the bridge's namespaces as its account: what the hostile server could make FreeRDP do.
ATTACK = """
import socket, sys
results = []
for path in sys.argv[1:]:
    try:
        open(path, "rb").read()
        results.append("read " + path)
    except OSError:
        pass
for host, port in (("127.0.0.1", 5432), ("127.0.0.1", PORT), ("10.0.2.2", 22), ("8.8.8.8", 53)):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((host, port))
        results.append(f"reached {host}:{port}")
    except OSError:
        pass
print(";".join(results) or "nothing")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="enters the bridge's namespaces with nsenter: root only")
def test_the_bridge_sees_no_secret_of_visa_and_reaches_only_the_machine(xrdp: Xrdp, tmp_path: Path) -> None:
    from visa.gateway import rdp
    from visa.gateway.rfb import server_handshake

    # What visa keeps: a data directory with its secret key (readable by all, to leave only the
    # sandbox between it and the bridge), its code and its configuration.
    data_dir = tmp_path / "visa-data"
    data_dir.mkdir(mode=0o755)
    (data_dir / "secret_key").write_text("visa-secret-key\n")
    (data_dir / "secret_key").chmod(0o644)
    visa_code = str(Path(rdp.__file__))

    async def attack() -> tuple[str, dict[str, str], list[str]]:
        bridge = await rdp.open_bridge("127.0.0.1", xrdp.port, xrdp.username, xrdp.password, (800, 600), 5)
        try:
            async with asyncio.timeout(20):
                await server_handshake(bridge.upstream, "")
            freerdp = None
            deadline = time.monotonic() + 20
            while freerdp is None and time.monotonic() < deadline:
                for pid in _descendants(bridge.pid):
                    with contextlib.suppress(OSError):
                        if Path(f"/proc/{pid}/comm").read_text().strip() == "xfreerdp":
                            freerdp = pid
                await asyncio.sleep(0.1)
            assert freerdp is not None, "FreeRDP did not start"
            status = _status(freerdp)
            uid, gid = rdp.bridge_account()
            code = ATTACK.replace("PORT", str(xrdp.port))
            done = await asyncio.to_thread(
                subprocess.run,
                ["nsenter", "-t", str(freerdp), "-m", "-n", "-S", str(uid), "-G", str(gid), "--",
                 "/usr/bin/python3", "-c", code, str(data_dir / "secret_key"), visa_code, "/etc/shadow",
                 "/etc/xrdp/key.pem"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            seen = _processes_showing(xrdp.password)
            return done.stdout.strip(), status, seen
        finally:
            await bridge.close()

    outcome, status, seen = asyncio.run(attack())
    # The same attack outside the sandbox reads the key and reaches the machine's port: the check bites.
    outside = subprocess.run([sys.executable, "-c", ATTACK.replace("PORT", str(xrdp.port)), str(data_dir / "secret_key")],
                             capture_output=True, text=True, timeout=60).stdout
    assert f"read {data_dir / 'secret_key'}" in outside and f"reached 127.0.0.1:{xrdp.port}" in outside, outside
    assert outcome == "nothing"  # no file of visa's or the host's, no network but the machine's socket
    uid, _ = rdp.bridge_account()
    assert status["Uid"].split() == [str(uid)] * 4 and uid != 0
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
    assert seen == []  # the password: in no command line, no environment


def test_a_refused_login_ends_the_bridge_with_visas_reason(xrdp: Xrdp) -> None:
    """A wrong password: xrdp ends the session, FreeRDP exits, and the bridge says why in visa's
    words (from FreeRDP's exit status), not FreeRDP's nor the machine's."""
    from visa.gateway import rdp
    from visa.gateway.relay import UpstreamClosed
    from visa.gateway.rfb import server_handshake

    async def attempt() -> tuple[str | None, int | None]:
        bridge = await rdp.open_bridge("127.0.0.1", xrdp.port, xrdp.username, "Wrong-" + secrets.token_urlsafe(12),
                                       (800, 600), 5, "de-de")  # fmt: skip
        try:
            async with asyncio.timeout(20):
                await server_handshake(bridge.upstream, "")
            bridge.upstream.start_relay()
            with contextlib.suppress(UpstreamClosed):  # the stream ends with FreeRDP
                async with asyncio.timeout(60):
                    while await bridge.upstream.read_chunk() is not None:
                        pass
            return await bridge.ended(), bridge.proc.returncode
        finally:
            await bridge.close()

    reason, status = asyncio.run(attempt())
    assert reason is not None and reason in {rdp.LOGIN_REFUSED, rdp.exit_reason(12)}, (reason, status)


def test_a_refused_login_is_readable_on_the_page(live: Live, xrdp: Xrdp) -> None:
    """The instance's secret is not the account's password: the page says the machine refused the
    login (visa's words, from FreeRDP's exit status) and does not try again by itself."""
    from tests.browser import allow_errors, chromium, require_chromium

    require_chromium()
    allow_errors(r"status of 404 .*/api/events", r"status of 502 .*/api/instances/[^/]+/files")
    rdp_world(live, xrdp, secret="Wrong-" + secrets.token_urlsafe(12))
    with chromium() as browser:
        page = _open_desktop(browser, live, xrdp, timeout=60_000)
        page.wait_for_selector('body[data-desktop="failed"]', state="attached")
        text = page.locator("#overlay-text").inner_text()
        assert text.startswith("The desktop closed the connection: the machine"), text
        assert "refused the login" in text, text
        assert page.locator("#btn-reconnect").is_visible()
        page.context.close()
        # A view link's page (no account) says so too.
        with live.login(xrdp.username) as owner:
            r = owner.post(f"/api/instances/{UID}/view-links", json={"label": "Seminar", "hours": 2})
            assert r.status_code == 201, r.text
            view_path = urlsplit(r.json()["url"]).path
        ctx = browser.new_context(base_url=live.base)
        page = ctx.new_page()
        page.set_default_timeout(60_000)
        page.goto(view_path)
        page.wait_for_selector('body[data-view="disconnected"]', state="attached")
        page.wait_for_function("() => !document.getElementById('overlay').classList.contains('hidden')")
        text = page.locator("#overlay-text").inner_text()
        assert text.startswith("The desktop closed the connection: the machine") and "refused the login" in text, text
        ctx.close()
