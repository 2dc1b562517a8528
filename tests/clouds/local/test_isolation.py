"""Attacks from inside a real local session, as its user: through its own xterm (keys typed
into the session's X display), its JupyterLab terminal (the terminals REST and websocket
API, over the session's unix socket, as the gateway reaches it) and commands run in its
sandbox the way its own programs run. Each attack must fail, and each has a positive
control (the granted data are readable, processed is writable, a host service answers the
test itself), so no check can pass by the attack being broken.

Two sessions share the module: alice's (the attacker: one experiment, raw and processed)
and bob's (the victim: another experiment, its own secret). Their instance directories live
under a data directory laid out like visa's, with a ``secret_key`` and a ``visa.db``.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.clouds.local.test_provider import _cleanup, _spec, _wait_state
from tests.clouds.local.xterm import type_line
from visa.clouds.base import MountSpec, Server
from visa.clouds.local import LocalProvider
from visa.clouds.local import supervisor as local_session
from visa.errors import CloudError
from visa.gateway import relay
from visa.gateway.service import Target
from visa.instances.models import InstanceState

ALICE_SECRET = "alice-Secret-0123456789"
# session.log's cap in the module's cloud (the smallest the config allows).
LOG_CAP = 65536
BOB_SECRET = "bob-Secret-9876543210-x"
KEY = "the-secret-key-of-visa-0123456789abcdef"

if not shutil.which("xdotool"):
    if os.environ.get("CI"):
        raise RuntimeError("CI lacks xdotool: deploy/system-packages.txt is not installed")
    pytest.skip("xdotool missing", allow_module_level=True)


@dataclass
class World:
    provider: LocalProvider
    alice: Server
    bob: Server
    data_dir: Path
    facility: Path
    host_port: int

    @property
    def files(self) -> dict[str, Path]:
        """Host paths an attacker would go for, by what they are."""
        bob_dir = self.provider.instance_dir(self.bob.id)
        return {
            "secret_key": self.data_dir / "secret_key",
            "database": self.data_dir / "visa.db",
            "bob_secret": bob_dir / local_session.RUN_DIR / local_session.SECRET_FILE,
            "bob_secret_old_layout": bob_dir / "secret",
            "bob_instance": bob_dir / local_session.INSTANCE_FILE,
            "bob_raw_on_host": self.facility / "visitor" / "ev-bob" / "id00" / "bob.h5",
            "bob_raw_at_target": Path("/data/visitor/ev-bob/id00/bob.h5"),
            "bob_home_note": self.provider.root / ".homes" / self.provider.account_name("iso-bob") / "notes.txt",
            "own_supervisor_log": self.provider.instance_dir(self.alice.id) / local_session.SUPERVISOR_LOG,
        }


def _host_service() -> tuple[socket.socket, int]:
    """A loopback TCP service of the host (like PostgreSQL, the cloud APIs, metrics)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"host-service\n")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, int(server.getsockname()[1])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("isolation")
    data_dir = base / "var"
    data_dir.mkdir(mode=0o700)
    (data_dir / "secret_key").write_text(KEY)
    (data_dir / "visa.db").write_text("SQLite format 3 -- users, sessions, secrets")
    facility = base / "facility"
    for owner in ("alice", "bob"):
        raw = facility / "visitor" / f"ev-{owner}" / "id00"
        raw.mkdir(parents=True)
        (raw / f"{owner}.h5").write_text(f"frames of {owner}")
    # A session's cores and memory come from its flavour: alice's is small.
    provider = LocalProvider("local", {"root_dir": str(data_dir / "local-instances"), "session_log_max_bytes": LOG_CAP})
    server, port = _host_service()
    try:
        provider.create(
            _spec("alice1", {"VNC": 5900, "JUPYTER": 8888}, secret=ALICE_SECRET, owner_username="iso-alice",
                  memory_mb=512, cores=1, mounts=(
                      MountSpec(str(facility / "visitor/ev-alice/id00"), "/data/visitor/ev-alice/id00", True, "bind"),
                      # The proposal's processed directory, which its members may write (as on
                      # the facility's storage): where a member plants links.
                      MountSpec(str(facility / "processed/ev-alice"), "/data/proposal/ev-alice", False, "bind"),
                      MountSpec(str(facility / "processed/ev-alice/id00"), "/data/processed/ev-alice/id00", False,
                                "bind"),
                  ))
        )  # fmt: skip
        provider.create(
            _spec("bob1", {"VNC": 5900, "JUPYTER": 8888}, secret=BOB_SECRET, owner_username="iso-bob", mounts=(
                MountSpec(str(facility / "visitor/ev-bob/id00"), "/data/visitor/ev-bob/id00", True, "bind"),
            ))
        )  # fmt: skip
        alice, bob = _wait_state(provider, "alice1"), _wait_state(provider, "bob1")
        assert alice.state == bob.state == InstanceState.ACTIVE, (alice.fault, bob.fault)
        assert provider.exec_in_session("bob1", ["sh", "-c", "echo bob-private > ~/notes.txt"]).returncode == 0
        yield World(provider, alice, bob, data_dir, facility, port)
    finally:
        server.close()
        _cleanup(provider)


def _home(world: World) -> Path:
    """alice's home on the host (one per user, outside the instance's directory)."""
    record = json.loads((world.provider.instance_dir(world.alice.id) / local_session.INSTANCE_FILE).read_text())
    return Path(record["home_dir"])


def _probe_script(world: World) -> str:
    """Shell that tries every read, write, connection and kill, one line of verdict each."""
    lines = []
    for name, path in world.files.items():
        lines.append(f"head -c1 {shlex.quote(str(path))} >/dev/null 2>&1 && echo READ {name} || echo DENIED {name}")
    lines.append("head -c1 /data/visitor/ev-alice/id00/alice.h5 >/dev/null 2>&1 && echo READ granted_raw "
                 "|| echo DENIED granted_raw")  # fmt: skip
    for name, target in (("raw_new", "/data/visitor/ev-alice/id00/new"), ("raw_existing", "/data/visitor/ev-alice/id00/alice.h5")):
        lines.append(f"(echo x >> {target}) 2>/dev/null && echo WROTE {name} || echo DENIED {name}")
    lines.append("(echo x > /data/processed/ev-alice/id00/out.txt) 2>/dev/null && echo WROTE processed "
                 "|| echo DENIED processed")  # fmt: skip
    for name, port in (("database_port", 5432), ("host_service", world.host_port)):
        lines.append(f"(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo CONNECTED {name} || echo REFUSED {name}")
    bob_sockets = world.bob.sockets.values() or [f"/nonexistent/{p}" for p in ("vnc", "jupyter")]
    for proto, path in zip(("bob_vnc", "bob_jupyter"), bob_sockets, strict=False):
        lines.append(
            f"python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' "
            f"{shlex.quote(path)} 2>/dev/null && echo CONNECTED {proto} || echo REFUSED {proto}"
        )
    # The supervisor's log (host paths, the sandbox's options) through any file a process of
    # the session holds open: /proc/<pid>/fd/<n> reopens it past the directory's 0700. The
    # pattern is written so that this script, open in bash, does not match it.
    lines.append("found=; for f in /proc/[0-9]*/fd/*; do [ -f \"$f\" ] && grep -qs 'supervisor[:] starting' \"$f\" "
                 "&& found=1; done; [ -n \"$found\" ] && echo READ supervisor_log_by_fd || echo DENIED supervisor_log_by_fd")
    supervisor = local_session.read_pid_file(world.provider.instance_dir(world.alice.id))
    assert supervisor is not None
    for name, pid in (("test_process", os.getpid()), ("supervisor", supervisor[0]), ("sandbox_init", 1)):
        lines.append(f"kill -9 {pid} 2>/dev/null && echo KILLED {name} || echo DENIED {name}")
    return "\n".join(lines) + "\n"


def _verdicts(text: str) -> dict[str, str]:
    """``VERDICT name`` lines; anything else the shell said fails the test, shown whole."""
    rows = [line.split() for line in text.splitlines() if line.strip()]
    assert all(len(row) == 2 for row in rows), text
    return {name: verdict for verdict, name in rows}


EXPECTED = {
    "secret_key": "DENIED", "database": "DENIED", "bob_secret": "DENIED", "bob_secret_old_layout": "DENIED",
    "bob_instance": "DENIED", "bob_raw_on_host": "DENIED", "bob_raw_at_target": "DENIED", "bob_home_note": "DENIED",
    "own_supervisor_log": "DENIED", "supervisor_log_by_fd": "DENIED",
    "granted_raw": "READ", "raw_new": "DENIED", "raw_existing": "DENIED", "processed": "WROTE",
    "database_port": "REFUSED", "host_service": "REFUSED", "bob_vnc": "REFUSED", "bob_jupyter": "REFUSED",
    "test_process": "DENIED", "supervisor": "DENIED", "sandbox_init": "DENIED",
}  # fmt: skip


def _check(verdicts: dict[str, str]) -> None:
    assert verdicts == EXPECTED


def _write_script(world: World, name: str) -> str:
    """The attack script, put in alice's home as she could have typed it (path inside the session)."""
    home = _home(world)
    script = home / name
    script.write_text(_probe_script(world))
    account = world.alice.provider_state.get("account")
    record = json.loads((world.provider.instance_dir(world.alice.id) / local_session.INSTANCE_FILE).read_text())
    if account and os.geteuid() == 0:
        entry = record["account"]
        os.chown(script, entry["uid"], entry["gid"])
    inside_home = record.get("home") or str(home)
    return f"{inside_home}/{name}"


def _wait_file(path: Path, marker: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        if marker in text:
            return text
        assert time.monotonic() < deadline, f"no {marker!r} in {path}: {text!r}"
        time.sleep(0.1)


# ---------------------------------------------------------------- through the session's own xterm


def test_attacks_typed_into_the_sessions_xterm_fail(world: World) -> None:
    prov = world.provider
    script = _write_script(world, "attack.sh")
    command = f"bash {script} > ~/xterm-verdicts.txt 2>&1; echo END >> ~/xterm-verdicts.txt"
    text = type_line(prov, world.alice.id, command, _home(world) / "xterm-verdicts.txt", "END")
    _check(_verdicts(text.replace("END", "")))
    # The xterm's shell really is the session's account, not visa's.
    whoami = prov.exec_in_session(world.alice.id, ["id", "-u"])
    assert int(whoami.stdout) != os.geteuid() or os.geteuid() != 0
    assert os.kill(os.getpid(), 0) is None  # still here
    assert prov.get(world.alice.id).state == InstanceState.ACTIVE  # type: ignore[union-attr]
    assert (world.facility / "processed/ev-alice/id00/out.txt").read_text() == "x\n"
    assert (world.facility / "visitor/ev-alice/id00/alice.h5").read_text() == "frames of alice"
    # The supervisor's log is there, with what the probe looked for, and only visa's user reads it.
    log = prov.instance_dir(world.alice.id) / local_session.SUPERVISOR_LOG
    assert "supervisor: starting sandbox" in log.read_text() and log.stat().st_mode & 0o077 == 0


# ---------------------------------------------------------------- through its Jupyter terminal


async def _terminal_run(server: Server, secret: str, command: str, end: str) -> str:
    """Open a JupyterLab terminal over the session's unix socket (as the gateway does) and type."""
    target = Target(0, "127.0.0.1", 0, secret, socket=server.sockets["JUPYTER"])
    base = f"/jupyter/{server.id}"
    headers = {"Authorization": f"token {secret}"}
    async with httpx.AsyncClient(transport=relay.UpstreamTransport(connections=4), timeout=20) as client:
        created = await client.post(relay.http_origin(target) + f"{base}/api/terminals", headers=headers)
        assert created.status_code == 200, created.text
        name = created.json()["name"]
    url = relay.ws_origin(target) + f"{base}/terminals/websocket/{name}"
    output = ""
    async with asyncio.timeout(60):
        async with await relay.ws_connect(target, url, additional_headers=headers) as ws:
            await ws.send(json.dumps(["stdin", command + "\r"]))
            while end not in output:
                message = json.loads(await ws.recv())
                if message[0] == "stdout":
                    output += message[1]
    return output


def test_attacks_from_the_jupyter_terminal_fail(world: World) -> None:
    script = _write_script(world, "attack2.sh")
    out = asyncio.run(
        _terminal_run(world.alice, ALICE_SECRET, f"bash {script} > ~/jupyter-verdicts.txt 2>&1; echo FIN''ISHED", "FINISHED")
    )
    assert "FINISHED" in out
    _check(_verdicts((_home(world) / "jupyter-verdicts.txt").read_text()))


def test_a_jupyter_terminal_runs_as_the_sessions_account(world: World) -> None:
    out = asyncio.run(_terminal_run(world.alice, ALICE_SECRET, "echo ID=$(id -u)=D''I", "=DI"))
    uid = int(out.split("ID=")[-1].split("=DI")[0])
    if os.geteuid() == 0:
        record = json.loads((world.provider.instance_dir("alice1") / local_session.INSTANCE_FILE).read_text())
        assert uid == record["account"]["uid"] >= 1000


def test_the_other_sessions_jupyter_refuses_alices_secret(world: World) -> None:
    """Even given the socket (the gateway's, not the session's, to reach), a secret opens one session."""
    transport = httpx.HTTPTransport(uds=world.bob.sockets["JUPYTER"])
    with httpx.Client(transport=transport, base_url="http://session", timeout=10) as client:
        assert client.get("/jupyter/bob1/api/status", headers={"Authorization": f"token {ALICE_SECRET}"}).status_code == 403
        assert client.get("/jupyter/bob1/api/status", headers={"Authorization": f"token {BOB_SECRET}"}).status_code == 200


# ---------------------------------------------------------------- the kernel's surfaces


def test_a_new_user_namespace_typed_into_the_xterm_is_refused(world: World) -> None:
    """``unshare -Ur`` would make the session root of a user namespace of its own (new
    mounts, new network stacks, the kernel code only such a root reaches)."""
    out = _home(world) / "userns-verdicts.txt"
    command = "unshare -Ur id -u > ~/userns-verdicts.txt 2>&1; echo rc=$? END >> ~/userns-verdicts.txt"
    text = type_line(world.provider, world.alice.id, command, out, "END")
    assert "Operation not permitted" in text and "rc=0" not in text, text
    # The same xterm still runs ordinary programs (threads and child processes included).
    command = "python3 -c 'import threading; t = threading.Thread(target=print); t.start()' && echo OK''AY > ~/ok.txt"
    assert type_line(world.provider, world.alice.id, command, _home(world) / "ok.txt", "OKAY").strip() == "OKAY"


def test_the_kernels_surfaces_are_refused_in_the_jupyter_terminal(world: World) -> None:
    """keyctl, bpf, perf_event_open, TIOCSTI into the terminal itself, a user namespace: EPERM."""
    from tests.clouds.test_seccomp import PROBE

    home = _home(world)
    (home / "kernel-probe.py").write_text(PROBE)
    out = asyncio.run(
        _terminal_run(world.alice, ALICE_SECRET, "python3 ~/kernel-probe.py > ~/kernel-verdicts.txt 2>&1; echo K''DONE",
                      "KDONE")
    )  # fmt: skip
    assert "KDONE" in out
    assert (home / "kernel-verdicts.txt").read_text().split("\n") == [
        "keyctl EPERM", "bpf EPERM", "perf_event_open EPERM", "TIOCSTI EPERM", "userns EPERM", "thread ok", "",
    ]  # fmt: skip


def test_commands_visa_runs_in_a_session_are_under_its_filter(world: World) -> None:
    """A process started into the session later (activity probe, sftp-server) has the same
    filter: one without could be ptraced by the session into the calls the filter denies."""
    from tests.clouds.test_seccomp import PROBE

    done = world.provider.exec_in_session(world.alice.id, ["python3", "-c", PROBE], timeout=60)
    assert done.stdout.decode().split("\n")[:5] == [
        "keyctl EPERM", "bpf EPERM", "perf_event_open EPERM", "TIOCSTI EPERM", "userns EPERM",
    ], done.stderr  # fmt: skip
    status = world.provider.exec_in_session(world.alice.id, ["sh", "-c", "grep -h ^Seccomp: /proc/[0-9]*/status"])
    modes = status.stdout.decode().split("\n")
    assert modes.count("Seccomp:\t2") >= 4 and "Seccomp:\t0" not in modes, status.stdout


# ---------------------------------------------------------------- run in the sandbox like its own programs


def test_the_sandbox_sees_only_its_own_things(world: World) -> None:
    run = world.provider.exec_in_session
    listing = run(world.alice.id, ["sh", "-c", "ls -a / /home /run; cat /etc/passwd"]).stdout.decode()
    assert "visa-iso-alice" in listing and "iso-bob" not in listing
    # No process of the host (this test, the supervisors) or of bob's session is visible.
    processes = run(world.alice.id, ["ps", "-e", "-o", "args="]).stdout.decode()
    assert "Xtigervnc" in processes and "jupyterlab" in processes
    assert "pytest" not in processes and "bob1" not in processes and str(world.data_dir) + " " not in processes
    caps = run(world.alice.id, ["grep", "-E", "^(CapEff|CapBnd|NoNewPrivs)", "/proc/self/status"]).stdout.decode()
    assert "CapEff:\t0000000000000000" in caps and "CapBnd:\t0000000000000000" in caps and "NoNewPrivs:\t1" in caps
    # The host service answers the host: the refusal inside is the namespace, not a dead port.
    with socket.create_connection(("127.0.0.1", world.host_port), timeout=5) as conn:
        assert conn.recv(64) == b"host-service\n"


def test_memory_beyond_the_flavour_is_refused(world: World) -> None:
    """alice's flavour has 512 MB: 1 GB more is killed, 64 MB is fine."""
    if not world.provider.isolation_report().cgroups:
        pytest.skip(f"no cgroups here: {world.provider.isolation_report().reasons}")
    grab = "import sys; b = bytearray(int(sys.argv[1]) * 2**20); b[::4096] = b'x' * len(b[::4096]); print('ok')"
    small = world.provider.exec_in_session(world.alice.id, ["python3", "-c", grab, "64"], timeout=60)
    assert small.returncode == 0 and small.stdout == b"ok\n", small.stderr
    big = world.provider.exec_in_session(world.alice.id, ["python3", "-c", grab, "1024"], timeout=60)
    assert big.returncode != 0 and b"ok" not in big.stdout
    assert world.provider.get(world.alice.id).state == InstanceState.ACTIVE  # type: ignore[union-attr]


def test_cores_and_processes_are_bounded_by_cgroups(world: World) -> None:
    report = world.provider.isolation_report()
    if not report.cgroups:
        pytest.skip(f"no cgroups here: {report.reasons}")
    record = json.loads((world.provider.instance_dir("alice1") / local_session.INSTANCE_FILE).read_text())
    dirs = [Path(p) for p in record["cgroups"]]
    sandbox_pid = json.loads((world.provider.instance_dir("alice1") / local_session.STATUS_FILE).read_text())["sandbox_pid"]
    for cgroup in dirs:
        assert str(sandbox_pid) in (cgroup / "cgroup.procs").read_text().split()
    if len(dirs) == 3:
        memory, cpu, pids = dirs
        assert int((memory / "memory.limit_in_bytes").read_text()) == 512 * 2**20
        assert int((cpu / "cpu.cfs_quota_us").read_text()) == int((cpu / "cpu.cfs_period_us").read_text())
        assert int((pids / "pids.max").read_text()) == world.provider.settings.pids_max


def test_a_socket_swapped_for_a_symlink_never_leads_the_gateway_elsewhere(world: World, tmp_path: Path) -> None:
    """alice replaces her Jupyter socket with a symlink to a host service's unix socket (as
    if it were docker.sock): visa still reaches her JupyterLab, and the host service no one."""
    host_socket = tmp_path / "host-service.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(host_socket))
    listener.listen(4)
    listener.settimeout(0.5)
    swap = world.provider.exec_in_session(
        world.alice.id, ["sh", "-c", f"rm {local_session.SANDBOX_RUN}/jupyter.sock && "
                         f"ln -s {host_socket} {local_session.SANDBOX_RUN}/jupyter.sock"]
    )  # fmt: skip
    assert swap.returncode == 0, swap.stderr
    try:
        run_link = world.provider.instance_dir(world.alice.id) / local_session.RUN_DIR / "jupyter.sock"
        assert run_link.is_symlink()  # the attack is in place
        transport = httpx.HTTPTransport(uds=world.alice.sockets["JUPYTER"])
        with httpx.Client(transport=transport, base_url="http://session", timeout=10) as client:
            status = client.get("/jupyter/alice1/api/status", headers={"Authorization": f"token {ALICE_SECRET}"})
        assert status.status_code == 200 and "kernels" in status.json()
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


# ---------------------------------------------------------------- where visa cannot isolate


def test_without_isolation_only_the_operator_is_served(tmp_path: Path) -> None:
    prov = LocalProvider("local", {"root_dir": str(tmp_path / "i"), "isolation": "none", "operator_usernames": ["op"]})
    report = prov.isolation_report()
    assert report.mode == "none" and "isolation is off" in report.summary()
    with pytest.raises(CloudError, match="serves only its operator|runs as root"):
        prov.create(_spec("refused", {}, owner_username="someone-else"))
    assert prov.get("refused") is None
    if os.geteuid() == 0:  # the operator's session would run as root: nobody is served
        assert "nobody is served" in report.summary() and report.operators == ()
        with pytest.raises(CloudError, match="would run as root"):
            prov.create(_spec("served", {}, owner_username="op"))
        assert prov.get("served") is None
        return
    assert "only op" in report.summary()
    try:
        prov.create(_spec("served", {}, owner_username="op"))
        assert _wait_state(prov, "served").state == InstanceState.ACTIVE
    finally:
        _cleanup(prov)


def test_the_operators_are_named_or_nobody_is(tmp_path: Path) -> None:
    """Whoever has visa's unix name as their visa username is nobody in particular."""
    for config in ({}, {"operator_usernames": []}):
        prov = LocalProvider("local", {"root_dir": str(tmp_path / "o"), "isolation": "none", **config})
        report = prov.isolation_report()
        assert report.operators == () and "nobody" in report.summary()
        with pytest.raises(CloudError, match="nobody|runs as root"):
            prov.create(_spec("login", {}, owner_username=getpass.getuser()))
        assert prov.get("login") is None


def test_an_unsandboxed_session_never_runs_as_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("visa is not root here")
    prov = LocalProvider("local", {"root_dir": str(tmp_path / "r"), "isolation": "none", "operator_usernames": ["op"]})
    with pytest.raises(CloudError, match="would run as root"):
        prov.create(_spec("asroot", {}, owner_username="op"))
    assert prov.get("asroot") is None and not (tmp_path / "r" / "asroot").exists()


def test_no_bubblewrap_means_no_isolation(tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    for prog in ("Xtigervnc", "vncpasswd", "openbox", "xterm", "nsenter", "setpriv"):
        if (found := shutil.which(prog)) is not None:
            (tools / prog).symlink_to(found)
    prov = LocalProvider("local", {"root_dir": str(tmp_path / "i"), "path": str(tools)})
    report = prov.isolation_report()
    assert report.mode == "none" and "bubblewrap is not installed" in report.summary()
    with pytest.raises(CloudError, match="cannot isolate"):
        prov.create(_spec("nobwrap", {}, owner_username="not-the-operator"))


def test_the_config_is_validated(tmp_path: Path) -> None:
    from visa.errors import InvalidInput

    for bad, field in (
        ({"uid_range": [10, 20]}, "uid_range"),
        ({"network": "host"}, "network"),
        ({"isolation": "maybe"}, "isolation"),
        ({"sandbox_paths": ["relative"]}, "sandbox_paths"),
        ({"blocked_networks": ["10.0.0.0/33"]}, "blocked_networks"),
        ({"blocked_networks": ["fd00::/8"]}, "blocked_networks"),
        ({"network_account": "root"}, "network_account"),
        ({"no_such_key": 1}, "no_such_key"),
    ):
        with pytest.raises(InvalidInput) as caught:
            LocalProvider("local", {"root_dir": str(tmp_path), **bad})
        assert field in str(caught.value.message) or field in str(getattr(caught.value, "field", ""))


def test_account_names_are_unix_names_of_their_own() -> None:
    prov = LocalProvider("local", {"root_dir": "/nonexistent"})
    assert prov.account_name("alice") == "visa-alice"
    odd = prov.account_name("Alice.Smith@example.org")
    assert odd.startswith("visa--alice-smith") and odd != prov.account_name("alice.smith@example.org")
    assert len(prov.account_name("x" * 200)) <= 32
    # A name that had to change has a form no username yields: a '-' right after the prefix.
    assert prov.account_name("john.doe") != prov.account_name("john-doe-30f696") == "visa-john-doe-30f696"
    assert prov.account_name("john.doe").startswith("visa--")


def test_an_account_not_recorded_as_the_users_is_never_adopted(tmp_path: Path) -> None:
    """A host account of the name visa would give is someone else's until the database says
    otherwise; a recorded name whose uid differs is refused too."""
    if os.geteuid() != 0 or shutil.which("bwrap") is None:
        pytest.skip("accounts are made only when visa runs as root")
    import pwd
    import subprocess

    from tests.clouds.accounts import remove_account

    prov = LocalProvider("local", {"root_dir": str(tmp_path / "a"), "uid_range": [282000, 282999]})
    squat = prov.account_name("h2-squat")
    assert subprocess.run(["useradd", "-M", "-N", "-K", "UID_MIN=282000", "-K", "UID_MAX=282999", squat]).returncode == 0
    try:
        with pytest.raises(CloudError, match="not recorded"):
            prov.new_account("h2-squat", None, ())
        with pytest.raises(CloudError, match="no unix account is recorded"):
            prov.create(_spec("unrecorded", {}, owner_username="h2-squat", account=None))
        other_uid = pwd.getpwnam(squat).pw_uid + 1
        with pytest.raises(CloudError, match="not its recorded"):
            prov.create(_spec("otheruid", {}, owner_username="h2-squat", account=(squat, other_uid)))
        assert prov.list_servers() == []
    finally:
        remove_account(squat)


def test_a_users_uid_number_is_used_and_a_system_uid_refused(world: World, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("accounts are made only when visa runs as root")
    prov = LocalProvider("local", {"root_dir": str(tmp_path / "u")})
    try:
        with pytest.raises(CloudError, match="below 1000"):
            prov.new_account("iso-root-like", 0, ())
        with pytest.raises(CloudError, match="cannot run a session"):
            prov.create(_spec("sysuid", {}, owner_username="iso-root-like", owner_uid=0, owner_gid=0,
                              account=("visa-iso-root-like", 0)))
        import pwd

        uid = next(u for u in range(271000, 272000) if not _uid_taken(u))
        prov.create(_spec("withuid", {}, owner_username=f"iso-uid-{uid}", owner_uid=uid, owner_gid=uid))
        assert _wait_state(prov, "withuid").state == InstanceState.ACTIVE
        assert pwd.getpwnam(prov.account_name(f"iso-uid-{uid}")).pw_uid == uid
        assert int(prov.exec_in_session("withuid", ["id", "-u"]).stdout) == uid
    finally:
        _cleanup(prov)


def _uid_taken(uid: int) -> bool:
    import pwd

    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False


def test_killing_the_supervisor_takes_the_sandbox_with_it(tmp_path: Path) -> None:
    prov = LocalProvider("local", {"root_dir": str(tmp_path / "k")})
    try:
        prov.create(_spec("orphan", {}, owner_username="iso-alice"))
        assert _wait_state(prov, "orphan").state == InstanceState.ACTIVE
        found = local_session.read_pid_file(prov.instance_dir("orphan"))
        assert found is not None
        os.kill(found[0], signal.SIGKILL)
        status = json.loads((prov.instance_dir("orphan") / local_session.STATUS_FILE).read_text())
        deadline = time.monotonic() + 10
        while local_session.session_pids(prov.instance_dir("orphan"), status.get("pid_ns")):
            assert time.monotonic() < deadline, "the sandbox outlived its supervisor"
            time.sleep(0.05)
    finally:
        _cleanup(prov)


@pytest.fixture
def network_account() -> Iterator[str]:
    """The account slirp4netns runs as, made by the provider for the test, removed after it."""
    name = "_visa-t-net"
    yield name
    subprocess.run(["userdel", name], capture_output=True)


def test_a_session_allowed_outside_still_never_reaches_the_host(
    world: World, tmp_path: Path, network_account: str
) -> None:
    """network = "outside": the session gets slirp4netns' NAT (an interface of its own), but
    neither its loopback nor the NAT's host address (10.0.2.2) leads to the host's services."""
    if not shutil.which("slirp4netns"):
        pytest.skip("slirp4netns missing")
    prov = LocalProvider("local", {"root_dir": str(tmp_path / "net"), "network": "outside",
                                   "network_account": network_account})  # fmt: skip
    if prov.isolation_report().mode != "sandbox":
        pytest.skip(prov.isolation_report().summary())
    probe = (
        "import socket, sys\n"
        "print('tap0' in [n for _, n in socket.if_nameindex()])\n"
        "for host in ('127.0.0.1', '10.0.2.2'):\n"
        "    for port in (5432, int(sys.argv[1])):\n"
        "        try:\n"
        "            socket.create_connection((host, port), 2).close(); print('CONNECTED', host, port)\n"
        "        except OSError:\n"
        "            print('REFUSED', host, port)\n"
    )
    try:
        prov.create(_spec("outside", {}, owner_username="iso-alice"))
        assert _wait_state(prov, "outside").state == InstanceState.ACTIVE
        deadline = time.monotonic() + 10
        while True:
            out = prov.exec_in_session("outside", ["python3", "-c", probe, str(world.host_port)]).stdout.decode()
            if out.startswith("True") or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # slirp4netns configures tap0 just after the sandbox starts
        lines = out.splitlines()
        assert lines[0] == "True", out
        assert all(line.startswith("REFUSED") for line in lines[1:]) and len(lines) == 5, out
        with socket.create_connection(("127.0.0.1", world.host_port), timeout=5) as conn:
            assert conn.recv(64) == b"host-service\n"
    finally:
        _cleanup(prov)


# ---------------------------------------------------------------- network = "outside", on a network of the test's own

HOST_NS, OUTSIDE_NS = "visa-t-host", "visa-t-outside"
HOST_ADDR, OUTSIDE_ADDR, BLOCKED_ADDR, LINK_LOCAL = "198.18.0.1", "198.18.0.2", "198.51.100.7", "169.254.169.254"


def _ip(*argv: str) -> None:
    done = subprocess.run(["ip", *argv], capture_output=True, timeout=30)
    assert done.returncode == 0, (argv, done.stderr)


@pytest.fixture
def test_network() -> Iterator[None]:
    """A host of the test's own (namespace visa-t-host: 198.18.0.1 and 169.254.169.254 are its
    addresses) wired to an outside (visa-t-outside: 198.18.0.2, and 198.51.100.7 behind it)."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("network namespaces of the test's own need root and iproute2")
    for ns in (HOST_NS, OUTSIDE_NS):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        _ip("netns", "add", ns)
    try:
        _ip("link", "add", "vt-host", "netns", HOST_NS, "type", "veth", "peer", "name", "vt-out", "netns", OUTSIDE_NS)
        for ns, link, addr in ((HOST_NS, "vt-host", HOST_ADDR), (OUTSIDE_NS, "vt-out", OUTSIDE_ADDR)):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", link)
            _ip("-n", ns, "link", "set", link, "up")
        _ip("-n", HOST_NS, "addr", "add", f"{LINK_LOCAL}/32", "dev", "lo")
        _ip("-n", HOST_NS, "route", "add", "default", "via", OUTSIDE_ADDR)
        _ip("-n", OUTSIDE_NS, "addr", "add", f"{BLOCKED_ADDR}/32", "dev", "lo")
        yield
    finally:
        for ns in (HOST_NS, OUTSIDE_NS):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _listen(address: str) -> socket.socket:
    """A TCP service on ``address`` that says which address it is."""
    server = socket.socket()
    server.bind((address, 0))
    server.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(f"service at {address}\n".encode())
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server


NET_PROBE = """
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), 3) as conn:
            print("CONNECTED", host, conn.recv(64).decode().strip().replace(" ", "_"))
    except OSError as exc:
        print("REFUSED", host, type(exc).__name__)
"""


def test_outside_network_never_reaches_the_hosts_own_or_link_local_addresses(
    test_network: None, tmp_path: Path, network_account: str
) -> None:
    """network = "outside": the session reaches an outside address, but none of the host's own
    addresses, nothing at 169.254.0.0/16 (a metadata service), and no configured blocked network."""
    if not shutil.which("slirp4netns"):
        pytest.skip("slirp4netns missing")
    from tests.netns import run_in

    listeners = [run_in(HOST_NS, _listen, HOST_ADDR), run_in(HOST_NS, _listen, LINK_LOCAL),
                 run_in(OUTSIDE_NS, _listen, OUTSIDE_ADDR), run_in(OUTSIDE_NS, _listen, BLOCKED_ADDR)]  # fmt: skip
    targets = [f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in listeners]
    prov = LocalProvider("local", {"root_dir": str(tmp_path / "net"), "network": "outside",
                                   "blocked_networks": ["198.51.100.0/24"], "network_account": network_account})  # fmt: skip
    if prov.isolation_report().mode != "sandbox":
        pytest.skip(prov.isolation_report().summary())
    try:
        # The session's supervisor, slirp4netns with it, lives on the test's host.
        run_in(HOST_NS, prov.create, _spec("nat", {}, owner_username="iso-alice"))
        assert _wait_state(prov, "nat").state == InstanceState.ACTIVE
        # The session tries to lift its firewall first: it has no capability in its namespace.
        flush = prov.exec_in_session("nat", ["sh", "-c", "iptables -F OUTPUT || iptables-nft -F OUTPUT"], timeout=60)
        assert flush.returncode != 0 and b"ermission denied" in flush.stderr, flush.stderr
        deadline = time.monotonic() + 15
        while True:  # slirp4netns brings tap0 up just after the sandbox starts
            out = prov.exec_in_session("nat", ["python3", "-c", NET_PROBE, *targets], timeout=60).stdout.decode()
            if f"CONNECTED {OUTSIDE_ADDR}" in out or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        verdicts = {line.split()[1]: line.split()[0] for line in out.splitlines()}
        assert verdicts == {HOST_ADDR: "REFUSED", LINK_LOCAL: "REFUSED", OUTSIDE_ADDR: "CONNECTED",
                            BLOCKED_ADDR: "REFUSED"}, out  # fmt: skip
        # Each refused service answers from where it is: the refusal is the session's, not a dead port.
        for server in listeners:
            assert run_in(HOST_NS, lambda s=server: socket.create_connection(s.getsockname(), 3).recv(64)).startswith(b"service")
        # slirp4netns, which handles the session's packets, is no root.
        import pwd

        net_uid = pwd.getpwnam(network_account).pw_uid
        assert _processes_of(net_uid) == ["slirp4netns"]  # and no root one handles this session
        # A supervisor killed with -9 takes its network helpers with it.
        supervisor = local_session.read_pid_file(prov.instance_dir("nat"))
        assert supervisor is not None
        os.kill(supervisor[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _processes_of(net_uid):
            assert time.monotonic() < deadline, _processes_of(net_uid)
            time.sleep(0.05)
    finally:
        _cleanup(prov)
        for server in listeners:
            server.close()


def _processes_of(uid: int) -> list[str]:
    names = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.stat(f"/proc/{entry}").st_uid == uid:
                names.append(Path(f"/proc/{entry}/comm").read_text().strip())
        except OSError:
            continue
    return names

# ---------------------------------------------------------------- links, terminals, logs and paths


def test_a_link_planted_in_the_proposal_directory_never_gives_root_directories_away(
    world: World, tmp_path: Path
) -> None:
    """alice, a member who may write her proposal's processed directory, plants links there
    from her Jupyter terminal: one where a new processed area will be (the leaf), one in place
    of a directory above one (a parent), both to root's own directories. Creating a session
    with those areas is refused, and nothing outside the facility's tree changes owner."""
    scratch = {name: tmp_path / f"root-{name}" for name in ("leaf", "parent", "ro")}
    for path in scratch.values():
        path.mkdir(mode=0o755)
    before = {name: path.stat() for name, path in scratch.items()}
    plant = " && ".join(
        f"ln -s {scratch[name]} /data/proposal/ev-alice/{link}"
        for name, link in (("leaf", "id01"), ("parent", "linked"), ("ro", "id03"))
    )
    out = asyncio.run(_terminal_run(world.alice, ALICE_SECRET, f"{plant} && echo PLAN''TED", "PLANTED"))
    assert "PLANTED" in out
    proposal = world.facility / "processed/ev-alice"
    assert (proposal / "id01").is_symlink() and (proposal / "linked").is_symlink()  # the attack is in place
    attempts = {
        "leaf": MountSpec(str(proposal / "id01"), "/data/processed/ev-alice/id01", False, "bind"),
        "parent": MountSpec(str(proposal / "linked/id02"), "/data/processed/ev-alice/id02", False, "bind"),
        "ro": MountSpec(str(proposal / "id03"), "/data/visitor/ev-alice/id03", True, "bind"),
    }
    for name, mount in attempts.items():
        with pytest.raises(CloudError, match="symbolic link") as caught:
            world.provider.create(_spec(f"planted-{name}", {}, owner_username="iso-alice", mounts=(mount,)))
        assert str(proposal) in str(caught.value)
        assert world.provider.get(f"planted-{name}") is None
    for name, path in scratch.items():
        after = path.stat()
        assert (after.st_uid, after.st_gid, after.st_mode) == (before[name].st_uid, before[name].st_gid,
                                                               before[name].st_mode), name
        assert list(path.iterdir()) == [], name  # no processed area made inside either


def test_a_processed_directory_swapped_for_a_link_is_not_bound_at_the_next_start(tmp_path: Path) -> None:
    """Between two starts a member replaces the session's processed area by a link to root's
    directory: the session does not start (it says why), and the directory stays root's."""
    prov = LocalProvider("local", {"root_dir": str(tmp_path / "swap")})
    area = tmp_path / "processed" / "ev-swap" / "id00"
    target = tmp_path / "root-scratch"
    target.mkdir(mode=0o755)
    try:
        prov.create(_spec("swap", {}, owner_username="iso-alice",
                          mounts=(MountSpec(str(area), "/data/processed/ev-swap/id00", False, "bind"),)))
        assert _wait_state(prov, "swap").state == InstanceState.ACTIVE
        prov.stop("swap")
        area.rename(area.with_name("id00.old"))
        area.symlink_to(target)
        with contextlib.suppress(CloudError):
            prov.start("swap")
        server = _wait_state(prov, "swap")
        assert server.state == InstanceState.ERROR and "symbolic link" in (server.fault or ""), server.fault
        assert target.stat().st_uid == os.geteuid() and list(target.iterdir()) == []
    finally:
        _cleanup(prov)


WATCHER = """
import os, stat, sys, time
seen = {}
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode()
            if not ("sleep 7.25" in cmd or "sftp-server" in cmd):
                continue
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        try:  # sftp-server makes itself undumpable: its descriptors are out of reach
            ttys = [n for n in (0, 1, 2) if stat.S_ISCHR(os.stat(f"/proc/{pid}/fd/{n}").st_mode)
                    and os.major(os.stat(f"/proc/{pid}/fd/{n}").st_rdev) in (4, 5, *range(136, 144))]
        except OSError:
            ttys = "hidden"
        seen[pid] = f"{cmd.split()[0].rsplit('/', 1)[-1]} tty_nr={fields[4]} tty_fds={ttys}"
    time.sleep(0.02)
open(sys.argv[1], "w").write("\\n".join(seen.values()) + "\\nEND\\n")
"""

VISA_UNDER_A_TERMINAL = """
import sys, time
from visa.clouds.local import LocalProvider
provider = LocalProvider("local", {"root_dir": sys.argv[1], "session_log_max_bytes": 65536})
with provider.open_sftp(sys.argv[2]) as access:
    access.sftp.listdir(access.roots[0])
    time.sleep(2)
print("EXEC", provider.exec_in_session(sys.argv[2], ["sleep", "7.25"]).returncode, flush=True)
"""


def test_what_visa_runs_in_a_session_has_no_terminal_of_visas(world: World) -> None:
    """visa runs under an operator's terminal (a CLI command, a service started by hand); a
    process of alice's session watches for what visa starts in it (a command, sftp-server)
    and looks for that terminal on them: as their controlling terminal (TIOCSTI reaches the
    operator's shell through it) or as an open descriptor."""
    import fcntl
    import subprocess
    import sys
    import termios

    home = _home(world)
    (home / "watch.py").write_text(WATCHER)
    if os.geteuid() == 0:
        entry = json.loads((world.provider.instance_dir(world.alice.id) / local_session.INSTANCE_FILE).read_text())
        os.chown(home / "watch.py", entry["account"]["uid"], entry["account"]["gid"])
    out = asyncio.run(_terminal_run(world.alice, ALICE_SECRET,
                                    "(python3 ~/watch.py ~/watched.txt 25 &) ; echo WATCH''ING", "WATCHING"))
    assert "WATCHING" in out
    master, slave = os.openpty()

    def take_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    visa = subprocess.Popen(
        [sys.executable, "-c", VISA_UNDER_A_TERMINAL, str(world.provider.root), world.alice.id],
        stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True, preexec_fn=take_terminal,
    )
    os.close(slave)
    try:
        visa.wait(60)  # what it prints is a line: the terminal's buffer holds it
        os.set_blocking(master, False)
        said = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(master, 65536):
                said += chunk
    finally:
        os.close(master)
    assert b"EXEC 0" in said, said
    text = _wait_file(home / "watched.txt", "END", timeout=40)
    rows = [line for line in text.splitlines() if line and line != "END"]
    # The watcher saw both (the check is not blind), and neither has the terminal.
    assert {row.split()[0] for row in rows} >= {"sleep", "sftp-server"}, text
    assert all(row.endswith((" tty_nr=0 tty_fds=[]", " tty_nr=0 tty_fds=hidden")) for row in rows), text


def test_what_a_session_prints_is_capped(world: World) -> None:
    """alice makes her JupyterLab log without end (a request it refuses is a line of its log,
    the URL in it): session.log stays within the cloud's bound, one older file kept. (Sent to
    her lab's socket as her browser would: an earlier test has her swap the socket's name
    inside the session.)"""
    transport = httpx.HTTPTransport(uds=world.alice.sockets["JUPYTER"])
    with httpx.Client(transport=transport, base_url="http://session", timeout=20) as client:
        for i in range(30):
            client.get(f"/jupyter/{world.alice.id}/flood-{i}-{'x' * 8000}")
    log = world.provider.instance_dir(world.alice.id) / local_session.LOG_FILE
    old = log.with_name(log.name + ".1")
    deadline = time.monotonic() + 10
    while not (old.exists() and "flood-29" in log.read_text(errors="replace") + old.read_text(errors="replace")):
        assert time.monotonic() < deadline, "the flood never reached the log"
        time.sleep(0.2)
    assert log.stat().st_size <= LOG_CAP and old.stat().st_size <= LOG_CAP
    assert log.stat().st_mode & 0o077 == 0


def test_visas_working_directory_is_not_shown_to_sessions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """jupyter_command names a program without a directory: nothing of visa's working directory
    (here, a secret file beside it) is bound into the session."""
    cwd = tmp_path / "visa-cwd"
    cwd.mkdir()
    (cwd / "secret.txt").write_text("operator-secret")
    monkeypatch.chdir(cwd)
    prov = LocalProvider("local", {"root_dir": str(tmp_path / "m4"), "jupyter_command": ["jupyter-lab"]})
    try:
        prov.create(_spec("cwd", {}, owner_username="iso-alice"))
        assert _wait_state(prov, "cwd").state == InstanceState.ACTIVE
        seen = prov.exec_in_session("cwd", ["sh", "-c", f"cat {cwd}/secret.txt; ls {cwd}; echo DONE"])
        assert b"operator-secret" not in seen.stdout and b"secret.txt" not in seen.stdout
        assert seen.stdout.endswith(b"DONE\n"), seen
    finally:
        _cleanup(prov)


def test_a_bound_software_path_never_shows_visas_own_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from visa.errors import InvalidInput
    from visa.settings import Settings

    data_dir = tmp_path / "var"
    (data_dir / "local-instances" / ".homes").mkdir(parents=True)
    config = tmp_path / "etc" / "visa.toml"
    config.parent.mkdir()
    config.write_text("")
    monkeypatch.setenv("VISA_CONFIG", str(config))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    settings = Settings(data_dir=data_dir, secret_key="k")  # the data directory the provider is given
    for paths, what in (
        ([str(data_dir)], "data directory"),
        ([str(tmp_path)], "data directory"),  # holds it
        ([str(data_dir / "local-instances")], "sessions' root"),
        ([str(data_dir / "local-instances" / ".homes")], "data directory"),  # inside them
        ([str(config.parent)], "configuration file"),
        ([str(tmp_path / "work")], "working directory"),
    ):
        with pytest.raises(InvalidInput) as caught:
            LocalProvider.configured("local", {"sandbox_paths": paths}, settings)
        assert caught.value.field == "sandbox_paths" and paths[0] in caught.value.message, caught.value.message
        assert what in caught.value.message, caught.value.message
    LocalProvider.configured("local", {"sandbox_paths": ["/opt"]}, settings)
    with pytest.raises(InvalidInput) as caught:  # no data directory given: the cloud must name its root
        LocalProvider("local", {})
    assert caught.value.field == "root_dir"


def test_visas_path_never_chooses_a_sessions_programs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory early in visa's own PATH (one someone else may write) holds programs of the
    names a session runs: none of them runs, outside the sandbox (as root) or inside it."""
    planted = tmp_path / "planted"
    planted.mkdir()
    marker = tmp_path / "ran"
    names = ("bwrap", "nsenter", "setpriv", "vncpasswd", "useradd", "groupadd", "Xtigervnc", "openbox", "xterm",
             "sleep", "python3")
    for name in names:
        real = shutil.which(name)
        if real is None:
            continue
        program = planted / name
        program.write_text(f"#!/bin/sh\necho {name} >> {marker}\nexec {real} \"$@\"\n")
        program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{planted}:{os.environ['PATH']}")
    prov = LocalProvider("local", {"root_dir": str(tmp_path / "path")})
    try:
        prov.create(_spec("path", {"VNC": 5900}, owner_username="iso-alice"))
        assert _wait_state(prov, "path").state == InstanceState.ACTIVE
        assert prov.exec_in_session("path", ["sleep", "0"]).returncode == 0
        record = json.loads((prov.instance_dir("path") / local_session.INSTANCE_FILE).read_text())
        assert record["programs"]["Xtigervnc"].startswith("/usr/") and record["programs"]["bwrap"].startswith("/usr/")
    finally:
        _cleanup(prov)
    assert not marker.exists(), marker.read_text()
