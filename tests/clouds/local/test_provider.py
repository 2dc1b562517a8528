"""The local provider with real processes: TigerVNC/Xvfb desktops, JupyterLab, sandboxes.

Needs the Debian packages of deploy/system-packages.txt and JupyterLab; skipped without
them outside CI (where their absence is a failure). Every fixture deletes what it created
and checks that no process of its sessions is left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.clouds.accounts import recorded_account
from tests.clouds.rfb import RfbAuthFailed, RfbClient, vnc_auth_response
from tests.processes import pids_with_env
from visa.clouds.base import MountSpec, Server, ServerSpec
from visa.clouds.local import LocalProvider
from visa.clouds.local import supervisor as local_session
from visa.errors import CloudError
from visa.instances.models import InstanceState

SECRET = "Xk4-pw9z-long-secret"
# Sessions run as this user's unix account (made on demand when the tests run as root).
OWNER = "lc-alice"

_missing = [
    p for p in ("Xtigervnc", "vncpasswd", "Xvfb", "x11vnc", "openbox", "xterm") if not shutil.which(p)
]
if _missing:
    if os.environ.get("CI"):
        raise RuntimeError(f"CI lacks {_missing}: deploy/system-packages.txt is not installed")
    pytest.skip(f"desktop programs missing: {_missing}", allow_module_level=True)


def _spec(uid: str, protocols: dict[str, int], **kwargs: object) -> ServerSpec:
    base: dict[str, object] = {
        "name": f"visa-{uid}",
        "instance_uid": uid,
        "image_ref": "local",
        "flavour_ref": "local",
        "user_data": "",
        "secret": SECRET,
        "protocols": protocols,
        "screen_width": 1024,
        "screen_height": 768,
        "owner_username": OWNER,
    }
    base.update(kwargs)
    if "account" not in base:
        owner_uid = base.get("owner_uid")
        base["account"] = recorded_account(str(base["owner_username"]), owner_uid if isinstance(owner_uid, int) else None)
    return ServerSpec(**base)  # type: ignore[arg-type]


def _wait_state(provider: LocalProvider, server_id: str, timeout: float = 45) -> Server:
    deadline = time.monotonic() + timeout
    while True:
        server = provider.get(server_id)
        assert server is not None
        if server.state not in (InstanceState.BUILDING, InstanceState.STOPPING):
            return server
        if time.monotonic() > deadline:
            log = provider.instance_dir(server_id) / local_session.LOG_FILE
            raise AssertionError(f"{server_id} still {server.state}: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def _leftovers(root: Path) -> list[int]:
    """Processes of any session under ``root`` (by the marker they all inherit)."""
    prefix = f"{local_session.MARKER_ENV}={root}/".encode()
    return [pid for pid in pids_with_env(lambda item: item.startswith(prefix)) if local_session.pid_alive(pid)]


def _cleanup(provider: LocalProvider) -> None:
    for server in provider.list_servers():
        provider.delete(server.id)
    left = _leftovers(provider.root)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-cloud")


@pytest.fixture
def provider(root: Path) -> Iterator[LocalProvider]:
    prov = LocalProvider("local", {"root_dir": str(root / "fn")})
    yield prov
    _cleanup(prov)


@pytest.fixture(scope="module")
def data(root: Path) -> dict[str, Path]:
    raw = root / "src" / "raw"
    processed = root / "src" / "processed"
    raw.mkdir(parents=True)
    # The processed area is made by the first session (visa gives only what it makes to the account).
    (raw / "scan_0001.h5").write_text("frames")
    return {"raw": raw, "processed": processed}


@pytest.fixture(scope="module")
def desktop(root: Path, data: dict[str, Path]) -> Iterator[tuple[LocalProvider, Server]]:
    """One running session with both protocols and data mounts, shared by the read-only checks."""
    prov = LocalProvider("local", {"root_dir": str(root / "shared")})
    spec = _spec(
        "desk1",
        {"VNC": 5900, "JUPYTER": 8888},
        keyboard_layout="fr-fr",
        mounts=(
            MountSpec(str(data["raw"]), f"/data/visitor/ev280-{root.name}/id21", True, "bind"),
            MountSpec(str(data["processed"]), f"/data/processed/ev280-{root.name}/id21", False, "bind"),
        ),
    )
    try:
        started = time.monotonic()
        created = prov.create(spec)
        assert created.state == InstanceState.BUILDING
        assert time.monotonic() - started < 2, "create must return at once"
        server = _wait_state(prov, "desk1")
        assert server.state == InstanceState.ACTIVE, server.fault
        yield prov, server
    finally:
        _cleanup(prov)


# ---------------------------------------------------------------- desktop


def test_vnc_auth_with_the_secret_and_a_nonblank_screen(desktop: tuple[LocalProvider, Server]) -> None:
    _, server = desktop
    with RfbClient(server.sockets["VNC"]) as client:
        fb = client.handshake(SECRET)
        assert (fb.width, fb.height) == (1024, 768)
        # The background, openbox's decorations and the xterm take a moment to paint.
        deadline = time.monotonic() + 15
        while True:
            screen = client.read_screen(fb)
            if screen.distinct_colours() > 2:
                break
            assert time.monotonic() < deadline, "the screen stayed blank"
            time.sleep(0.3)


def test_vnc_refuses_a_wrong_secret(desktop: tuple[LocalProvider, Server]) -> None:
    _, server = desktop
    with RfbClient(server.sockets["VNC"]) as client, pytest.raises(RfbAuthFailed):
        client.handshake("not-the-secret")


def test_probes_and_wrong_secrets_never_lock_the_desktop(desktop: tuple[LocalProvider, Server]) -> None:
    """Every client of the desktop's socket has the same address to the VNC server: visa's
    readiness probes (a connect and a close) and one wrong secret must not make it refuse the
    next client (TigerVNC's blacklist would, for 10 s and more, after 5 of them)."""
    import socket

    _, server = desktop
    for _ in range(12):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(server.sockets["VNC"])
        time.sleep(0.02)
    with RfbClient(server.sockets["VNC"]) as client, pytest.raises(RfbAuthFailed):
        client.handshake("not-the-secret")
    time.sleep(0.2)
    with RfbClient(server.sockets["VNC"]) as client:
        assert client.handshake(SECRET).width == 1024


def _listening_tcp(pid: int) -> list[str]:
    """TCP sockets a process's network namespace listens on."""
    rows = []
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            rows += [line.split() for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]]
    return [row[1] for row in rows if row[3] == "0A"]


def test_desktop_and_jupyter_answer_on_unix_sockets_only(desktop: tuple[LocalProvider, Server]) -> None:
    prov, server = desktop
    assert set(server.sockets) == {"VNC", "JUPYTER"} and not server.ports
    for path in server.sockets.values():
        info = os.stat(path)
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600, path
    if server.provider_state["isolation"] == "sandbox":
        # The session's programs (not its supervisor outside) have a network namespace of
        # their own, where nothing listens on TCP.
        pids = [p for p in _leftovers(prov.root) if local_session.pid_ns_of(p) is not None]
        assert len(pids) >= 4  # bwrap's init, the session, Xtigervnc, JupyterLab...
        own = os.readlink("/proc/self/ns/net")
        assert all(os.readlink(f"/proc/{pid}/ns/net") != own for pid in pids)
        assert all(_listening_tcp(pid) == [] for pid in pids)


def test_des_response_agrees_with_tigervnc() -> None:
    """vncpasswd -f stores DES(key=VNC's fixed obfuscation key, the password) with TigerVNC's
    own DES: the same computation as the challenge response, done independently."""
    fixed_key = bytes([23, 82, 107, 6, 35, 78, 88, 7]).decode("latin-1")
    stored = subprocess.run(["vncpasswd", "-f"], input=b"password\n", capture_output=True, check=True).stdout
    assert vnc_auth_response(fixed_key, b"password" + bytes(8))[:8] == stored


def test_keyboard_layout_follows_the_spec(desktop: tuple[LocalProvider, Server]) -> None:
    prov, server = desktop
    result = prov.exec_in_session(server.id, ["setxkbmap", "-query"])
    assert result.returncode == 0, result.stderr
    assert b"layout:     fr" in result.stdout


def test_xkb_layout_names() -> None:
    assert local_session.xkb_layout("en-us") == ("us", "")
    assert local_session.xkb_layout("fr-ch-qwertz") == ("ch", "fr")
    assert local_session.xkb_layout("de-de-qwertz") == ("de", "")
    assert local_session.xkb_layout("gb") == ("gb", "")


# ---------------------------------------------------------------- JupyterLab


def _http(server: Server, path: str, token: str | None = None, method: str = "GET") -> int:
    """A request to the session's JupyterLab, over its unix socket."""
    headers = {"Authorization": f"token {token}"} if token else {}
    transport = httpx.HTTPTransport(uds=server.sockets["JUPYTER"])
    with httpx.Client(transport=transport, base_url="http://session", timeout=20) as client:
        content = b"{}" if method == "POST" else None
        return client.request(method, path, headers=headers, content=content).status_code


def test_jupyter_answers_under_its_base_url_with_the_token(desktop: tuple[LocalProvider, Server]) -> None:
    _, server = desktop
    base = "/jupyter/desk1"
    assert _http(server, f"{base}/api/status", SECRET) == 200
    assert _http(server, f"{base}/lab?token={SECRET}") == 200
    assert _http(server, f"{base}/api/status") == 403
    assert _http(server, f"{base}/api/status", "wrong-token") == 403
    assert _http(server, "/api/status", SECRET) == 404


def test_jupyter_kernels_belong_to_the_session(desktop: tuple[LocalProvider, Server]) -> None:
    """Kernels run in sessions of their own; the session's teardown must still find them."""
    prov, server = desktop
    assert _http(server, "/jupyter/desk1/api/kernels", SECRET, method="POST") == 201
    deadline = time.monotonic() + 20
    while not any(b"ipykernel" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in _leftovers(prov.root)):
        assert time.monotonic() < deadline, "no kernel process"
        time.sleep(0.2)


def test_activity_probe_reads_x_idle_time(desktop: tuple[LocalProvider, Server]) -> None:
    prov, server = desktop
    result = prov.exec_in_session(server.id, ["xprintidle"])
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 0


def _session_programs(prov: LocalProvider, server_id: str) -> dict[str, list[int]]:
    """The session's processes by name: pid and real uid of each."""
    instance_dir = prov.instance_dir(server_id)
    status = local_session.read_json(instance_dir / local_session.STATUS_FILE) or {}
    found: dict[str, list[int]] = {}
    for pid in local_session.session_pids(instance_dir, status.get("pid_ns")):
        with contextlib.suppress(OSError):
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            uid = int(Path(f"/proc/{pid}/status").read_text().split("\nUid:")[1].split()[0])
            found.setdefault(name, []).append(uid)
    return found


def test_the_desktop_streams_through_the_video_proxy_in_the_session(desktop: tuple[LocalProvider, Server]) -> None:
    """The VNC socket visa reaches is the video proxy's, run inside the session (its sandbox,
    its account) in front of the server's own socket, which visa never reaches: what the
    server sends is parsed there, never in visa's process. It is the session's plumbing, not
    the user's computation."""
    prov, server = desktop
    programs = _session_programs(prov, server.id)
    assert "visa-video" in programs, programs
    if server.provider_state["isolation"] == "sandbox":
        assert programs["visa-video"] == programs["Xtigervnc"], programs  # the session's account, like its server
    run_dir = prov.instance_dir(server.id) / local_session.RUN_DIR
    assert stat.S_ISSOCK(os.stat(run_dir / local_session.VNC_SERVER_SOCKET).st_mode)
    published = {p.name for p in (prov.instance_dir(server.id) / local_session.SOCKETS_DIR).iterdir()}
    assert local_session.VNC_SERVER_SOCKET not in published, published
    report = prov.activity_report(server.id)
    assert report is not None and "visa-video" not in {p["command"] for p in report["processes"]}


def test_a_cloud_without_video_serves_the_vnc_servers_own_socket(root: Path) -> None:
    prov = LocalProvider("local", {"root_dir": str(root / "novideo"), "video": False})
    try:
        prov.create(_spec("nv", {"VNC": 5900}))
        server = _wait_state(prov, "nv")
        assert server.state == InstanceState.ACTIVE, server.fault
        assert "visa-video" not in _session_programs(prov, "nv")
        with RfbClient(server.sockets["VNC"]) as client:
            assert client.handshake(SECRET).width == 1024
    finally:
        _cleanup(prov)


# ---------------------------------------------------------------- data mounts


def test_data_is_read_only_at_the_target_inside_the_session(
    desktop: tuple[LocalProvider, Server], root: Path
) -> None:
    prov, server = desktop
    assert server.provider_state["mount_mode"] == "sandbox"
    target = f"/data/visitor/ev280-{root.name}/id21"
    read = prov.exec_in_session(server.id, ["cat", f"{target}/scan_0001.h5"])
    assert read.returncode == 0 and read.stdout == b"frames"
    write = prov.exec_in_session(server.id, ["touch", f"{target}/new"])
    assert write.returncode != 0 and b"Read-only file system" in write.stderr
    # Outside the session the target does not exist: the sandbox made it.
    assert not Path(target).exists()


def test_writable_mount_is_writable(
    desktop: tuple[LocalProvider, Server], root: Path, data: dict[str, Path]
) -> None:
    prov, server = desktop
    target = f"/data/processed/ev280-{root.name}/id21"
    result = prov.exec_in_session(server.id, ["sh", "-c", f"echo result > {target}/out.txt"])
    assert result.returncode == 0, result.stderr
    assert (data["processed"] / "out.txt").read_text() == "result\n"


def test_symlink_fallback_is_recorded(provider: LocalProvider, root: Path, data: dict[str, Path]) -> None:
    prov = LocalProvider(
        "local", {"root_dir": str(provider.root), "isolation": "none", "operator_usernames": [OWNER]}
    )
    target = "/data/visitor/ev999/id00"
    if os.geteuid() == 0:  # without its sandbox the session would run as root: refused
        with pytest.raises(CloudError, match="would run as root"):
            prov.create(_spec("links", {}, mounts=(MountSpec(str(data["raw"]), target, True, "bind"),)))
        return
    prov.create(_spec("links", {}, mounts=(MountSpec(str(data["raw"]), target, True, "bind"),)))
    server = _wait_state(prov, "links")
    assert server.state == InstanceState.ACTIVE
    assert server.provider_state["mount_mode"] == "symlinks"
    assert any("not read-only" in text for text in server.provider_state["limitations"])
    link = provider.root / "links" / "mounts" / target.lstrip("/")
    assert (link / "scan_0001.h5").read_text() == "frames"
    assert not Path(target).exists()


def test_missing_data_source_is_refused(provider: LocalProvider, root: Path) -> None:
    spec = _spec("nodata", {}, mounts=(MountSpec(str(root / "absent"), "/data/visitor/x/y", True, "bind"),))
    with pytest.raises(CloudError, match="does not exist"):
        provider.create(spec)
    assert provider.get("nodata") is None
    nfs = _spec("nfs", {}, mounts=(MountSpec("nfs.example.org:/data/x", "/data/visitor/x/y", True, "nfs"),))
    with pytest.raises(CloudError, match="mount_type to bind"):
        provider.create(nfs)
    for target in ("data/x", "/data/../etc", "/"):
        bad = _spec("bad", {}, mounts=(MountSpec(str(root), target, True, "bind"),))
        with pytest.raises(CloudError, match="absolute path"):
            provider.create(bad)


def test_a_missing_processed_area_is_made(provider: LocalProvider, root: Path) -> None:
    area = root / "processed-new" / "ev1" / "id1"
    provider.create(
        _spec("proc", {}, mounts=(MountSpec(str(area), f"/data/processed/{root.name}", False, "bind"),))
    )
    assert area.is_dir()
    assert _wait_state(provider, "proc").state == InstanceState.ACTIVE


# ---------------------------------------------------------------- lifecycle


def test_stop_start_reboot_delete_and_a_restarted_visa(provider: LocalProvider) -> None:
    provider.create(_spec("life", {"VNC": 5900}))
    assert _wait_state(provider, "life").state == InstanceState.ACTIVE
    instance_dir = provider.instance_dir("life")

    # A new provider object (visa restarted) sees and controls the same session.
    again = LocalProvider("local", {"root_dir": str(provider.root)})
    [seen] = again.list_servers()
    assert (seen.id, seen.state, seen.instance_uid) == ("life", InstanceState.ACTIVE, "life")
    vnc_socket = seen.sockets["VNC"]

    again.stop("life")
    stopped = provider.get("life")
    assert stopped is not None and stopped.state == InstanceState.STOPPED
    assert not _leftovers(provider.root) and instance_dir.is_dir()
    again.stop("life")  # idempotent

    provider.start("life")
    started = _wait_state(provider, "life")
    assert started.state == InstanceState.ACTIVE, started.fault
    provider.start("life")  # idempotent
    with RfbClient(provider.get("life").sockets["VNC"]) as client:  # type: ignore[union-attr]
        client.handshake(SECRET)

    before = local_session.read_pid_file(instance_dir)
    provider.reboot("life")
    server = _wait_state(provider, "life")
    assert server.state == InstanceState.ACTIVE and server.sockets["VNC"] == vnc_socket
    assert local_session.read_pid_file(instance_dir) != before

    provider.delete("life")
    assert provider.get("life") is None and not instance_dir.exists()
    assert not _leftovers(provider.root)
    provider.delete("life")  # idempotent
    provider.stop("life")


def test_a_crashed_session_is_an_error_and_can_be_started_again(provider: LocalProvider) -> None:
    provider.create(_spec("crash", {"VNC": 5900}))
    assert _wait_state(provider, "crash").state == InstanceState.ACTIVE
    xserver = next(
        pid
        for pid in _leftovers(provider.root)
        if Path(f"/proc/{pid}/comm").read_text().strip() == "Xtigervnc"
    )
    os.kill(xserver, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (server := provider.get("crash")) and server.state != InstanceState.ERROR:
        assert time.monotonic() < deadline, server
        time.sleep(0.1)
    assert server is not None and "xserver exited" in (server.fault or ""), server.fault
    assert not _leftovers(provider.root)

    provider.start("crash")
    assert _wait_state(provider, "crash").state == InstanceState.ACTIVE


def test_a_session_of_an_earlier_boot_is_stopped(provider: LocalProvider) -> None:
    provider.create(_spec("boot", {}))
    assert _wait_state(provider, "boot").state == InstanceState.ACTIVE
    provider.stop("boot")
    status_file = provider.instance_dir("boot") / local_session.STATUS_FILE
    status = local_session.read_json(status_file) or {}
    # What a host reboot leaves: no stop marker, a dead supervisor, another boot id.
    (provider.instance_dir("boot") / local_session.STOPPED_FILE).unlink()
    local_session.write_json(status_file, {**status, "phase": "running", "boot_id": "earlier-boot"})
    server = provider.get("boot")
    assert server is not None and server.state == InstanceState.STOPPED
    provider.start("boot")
    assert _wait_state(provider, "boot").state == InstanceState.ACTIVE


def test_create_twice_returns_the_same_server(provider: LocalProvider) -> None:
    first = provider.create(_spec("twice", {}))
    second = provider.create(_spec("twice", {}))
    assert first.id == second.id == "twice"
    assert len(provider.list_servers()) == 1


def test_x11vnc_desktop(root: Path) -> None:
    prov = LocalProvider("local", {"root_dir": str(root / "x11vnc"), "vnc_server": "x11vnc"})
    try:
        prov.create(_spec("xv", {"VNC": 5900}))
        server = _wait_state(prov, "xv")
        assert server.state == InstanceState.ACTIVE, server.fault
        with RfbClient(server.sockets["VNC"]) as client:
            fb = client.handshake(SECRET)
            assert (fb.width, fb.height) == (1024, 768)
        with RfbClient(server.sockets["VNC"]) as client, pytest.raises(RfbAuthFailed):
            client.handshake("wrong")
    finally:
        _cleanup(prov)


# ---------------------------------------------------------------- host and packages


def test_missing_package_names_the_install_command(
    root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(LocalProvider, "_warned", set())
    empty = tmp_path / "bin"
    empty.mkdir()
    prov = LocalProvider("local", {"root_dir": str(root / "nopkg"), "path": str(empty)})
    with caplog.at_level(logging.WARNING, logger="visa.clouds.local"):
        for _ in range(2):
            with pytest.raises(CloudError) as caught:
                prov.create(_spec("nopkg", {"VNC": 5900}))
            assert "apt-get install" in caught.value.message
            assert "tigervnc-standalone-server" in caught.value.message and "openbox" in caught.value.message
    warnings = [r for r in caplog.records if "apt-get install openbox" in r.getMessage()]
    assert len(warnings) == 1
    assert prov.list_servers() == []


def test_limits_report_the_host_and_what_runs(provider: LocalProvider) -> None:
    provider.create(_spec("lim", {}, cores=2, memory_mb=4096))
    _wait_state(provider, "lim")
    limits = provider.limits()
    assert limits.max_cores == os.cpu_count()
    assert limits.max_memory_mb and limits.max_memory_mb > 0
    assert (limits.used_instances, limits.used_cores, limits.used_memory_mb) == (1, 2, 4096)
    provider.stop("lim")
    assert provider.limits().used_instances == 0


def test_the_home_is_the_users_and_outlives_their_sessions(provider: LocalProvider) -> None:
    provider.create(_spec("home1", {}))
    assert _wait_state(provider, "home1").state == InstanceState.ACTIVE
    assert provider.exec_in_session("home1", ["sh", "-c", "echo kept > \"$HOME/notes.txt\""]).returncode == 0
    provider.delete("home1")
    assert provider.get("home1") is None
    provider.create(_spec("home2", {}))
    assert _wait_state(provider, "home2").state == InstanceState.ACTIVE
    out = provider.exec_in_session("home2", ["sh", "-c", "cat \"$HOME/notes.txt\""])
    assert out.stdout == b"kept\n", out.stderr
    # Another user's session does not see it.
    provider.create(_spec("home3", {}, owner_username="lc-other"))
    assert _wait_state(provider, "home3").state == InstanceState.ACTIVE
    assert provider.exec_in_session("home3", ["sh", "-c", "cat \"$HOME/notes.txt\""]).returncode != 0


def test_a_home_share_that_is_a_symlink_is_refused(provider: LocalProvider, root: Path) -> None:
    target = root / "elsewhere"
    target.mkdir(exist_ok=True)
    link = root / "homes-link"
    link.symlink_to(target)
    with pytest.raises(CloudError, match="symbolic link"):
        provider.create(_spec("homelink", {}, home=MountSpec(str(link), "/home/lc-alice", False, "bind")))
    assert provider.get("homelink") is None


def test_a_command_flooding_its_output_is_cut_and_killed(desktop: tuple[LocalProvider, Server]) -> None:
    # What a command prints inside a session is the session's: visa keeps a bounded part.
    prov, server = desktop
    started = time.monotonic()
    flood = prov.exec_in_session(server.id, ["sh", "-c", "yes; echo never-reached >&2"], max_output=4096, timeout=20)
    assert len(flood.stdout) == 4096 and flood.stdout.startswith(b"y\ny\n")
    assert flood.returncode == -9 and b"never-reached" not in flood.stderr
    assert time.monotonic() - started < 10
    small = prov.exec_in_session(server.id, ["sh", "-c", "printf ok; printf err >&2"], max_output=4096)
    assert (small.returncode, small.stdout, small.stderr) == (0, b"ok", b"err")
    fed = prov.exec_in_session(server.id, ["cat"], input=b"fed through stdin")
    assert fed.stdout == b"fed through stdin"
