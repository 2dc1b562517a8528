#!/usr/bin/env python3
"""A small real OpenStack on loopback for visa's integration tests and benchmarks.

    sandbox.py install          venv, databases, configuration (minutes the first time)
    sandbox.py start            install if needed, start what is not running, print credentials
    sandbox.py stop             stop every service
    sandbox.py status           one line per service; exit 3 when one is down
    sandbox.py credentials [--json|--env]
    sandbox.py kill SERVICE     SIGKILL one service (failure tests); ``start`` brings it back
    sandbox.py destroy          stop, drop the databases, remove state/

Standard library only: it runs with any Python 3.10+. The services run from their own venv
under ``state/`` (override with VISA_OS_SANDBOX_STATE) against the local PostgreSQL
(VISA_OS_SANDBOX_PG) and RabbitMQ.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# --real (or VISA_OS_SANDBOX_REAL=1): Nova's libvirt driver boots real VMs (plain emulation).
# Everything then runs in a network namespace of the sandbox's own (its own loopback, so the
# same ports as the fast sandbox; a bridge for the VMs): its own state, databases and RabbitMQ.
REAL = "--real" in sys.argv[1:] or os.environ.get("VISA_OS_SANDBOX_REAL") == "1"
if REAL:
    sys.argv = [a for a in sys.argv if a != "--real"]
    os.environ["VISA_OS_SANDBOX_REAL"] = "1"
    os.environ.setdefault("VISA_OS_SANDBOX_DB_PREFIX", "osr_")
NETNS = os.environ.get("VISA_OS_SANDBOX_NETNS", "visa-sandbox-real")

import configs  # noqa: E402

STATE = Path(os.environ.get("VISA_OS_SANDBOX_STATE", HERE / ("state-real" if REAL else "state"))).resolve()
VENV = STATE / "venv"
BIN = VENV / "bin"
LOGS, RUN, DONE = STATE / "log", STATE / "run", STATE / "done"
# The real sandbox reaches PostgreSQL through its unix socket: no address crosses namespaces.
PG = os.environ.get(
    "VISA_OS_SANDBOX_PG",
    "postgresql+psycopg2://postgres@/?host=/var/run/postgresql" if REAL else "postgresql+psycopg2://postgres@127.0.0.1:5432",
)
PLUGINS = HERE / "sandbox_plugins"


def log(message: str) -> None:
    print(f"[sandbox] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Service:
    name: str
    port: int | None = None
    wsgi: str | None = None
    binary: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    argv: tuple[str, ...] = ()
    socket: str | None = None  # a unix socket that exists once the service is up
    address: str = "127.0.0.1"

    def command(self) -> list[str]:
        if self.argv:
            return list(self.argv)
        if self.wsgi:
            return [str(BIN / "python"), "-m", "sandbox_plugins.serve", self.name, str(self.port), self.wsgi]
        conf = STATE / "etc/nova/nova.conf"
        return [str(BIN / self.binary), "--config-file", str(conf)]  # type: ignore[operator]


def real_services() -> list[Service]:
    """RabbitMQ, virtlogd and libvirtd of the real sandbox, inside its namespace."""
    etc, data = STATE / "etc", STATE / "data"
    rabbit = data / "rabbitmq"
    return [
        Service(
            "rabbitmq",
            5672,
            argv=("/usr/lib/rabbitmq/bin/rabbitmq-server",),
            env={
                "RABBITMQ_NODENAME": "visa-sandbox-rabbitmq@localhost",
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "ERL_EPMD_ADDRESS": "127.0.0.1",
                "RABBITMQ_MNESIA_BASE": str(rabbit / "mnesia"),
                "RABBITMQ_LOG_BASE": str(rabbit / "log"),
                "RABBITMQ_PID_FILE": str(rabbit / "rabbit.pid"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(rabbit / "enabled_plugins"),
                "HOME": str(rabbit),
            },
        ),
        Service("virtlogd", argv=("virtlogd", "-f", str(etc / "libvirt/virtlogd.conf"), "-p", str(RUN / "virtlogd.real.pid")),
                socket="/run/libvirt/virtlogd-sock"),
        Service("libvirtd", argv=("libvirtd", "-f", str(etc / "libvirt/libvirtd.conf"), "-p", str(RUN / "libvirtd.real.pid")),
                socket="/run/libvirt/libvirt-sock"),
        # The VMs' L2 agent and firewall: it reads the ports' security groups as admin.
        Service("tapbridge", argv=(str(BIN / "python"), "-m", "sandbox_plugins.tapbridge", configs.BRIDGE),
                env={"OS_AUTH_URL": f"{configs.KEYSTONE}/v3", "OS_PASSWORD": configs.ADMIN_PASSWORD,
                     "VISA_SANDBOX_LOCKS": str(data / "locks")}),
        Service("nfs-ganesha", 2049, argv=("ganesha.nfsd", "-F", "-f", str(etc / "ganesha/ganesha.conf"),
                                           "-L", str(LOGS / "nfs-ganesha.log"), "-p", str(RUN / "ganesha.real.pid")),
                address=configs.BRIDGE_ADDRESS),
    ]


def services() -> list[Service]:
    etc = STATE / "etc"
    return [*(real_services() if REAL else []),
        Service(
            "keystone",
            5000,
            "keystone.wsgi.api:application",
            env={"OS_KEYSTONE_CONFIG_DIR": str(etc / "keystone")},
        ),
        Service(
            "placement-api",
            8778,
            "placement.wsgi.api:application",
            env={"OS_PLACEMENT_CONFIG_DIR": str(etc / "placement")},
        ),
        Service(
            "glance-api",
            9292,
            "glance.wsgi.api:application",
            env={"OS_GLANCE_CONFIG_DIR": str(etc / "glance")},
        ),
        Service(
            "neutron-api",
            9696,
            "neutron.wsgi.api:application",
            env={
                "OS_NEUTRON_CONFIG_DIR": str(etc / "neutron"),
                "OS_NEUTRON_CONFIG_FILES": "neutron.conf;ml2_conf.ini",
            },
        ),
        Service(
            "nova-api",
            8774,
            "nova.wsgi.osapi_compute:application",
            env={"OS_NOVA_CONFIG_DIR": str(etc / "nova")},
        ),
        Service("nova-conductor", binary="nova-conductor"),
        Service("nova-scheduler", binary="nova-scheduler"),
        Service("nova-compute", binary="nova-compute"),
    ]


# ---------------------------------------------------------------- processes


def _pid(svc: Service) -> int | None:
    try:
        pid = int((RUN / f"{svc.name}.pid").read_text())
    except (OSError, ValueError):
        return None
    # A recycled pid belongs to someone else: only trust ours. gunicorn retitles itself, and a
    # read in the middle of that sees neither title: look again before saying no.
    for attempt in range(3):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if str(STATE).encode() in cmdline or f"visa-sandbox-{svc.name}".encode() in cmdline:
            return pid
        # RabbitMQ's start script: its environment names our state directory.
        with contextlib.suppress(OSError):
            if svc.argv and str(STATE).encode() in Path(f"/proc/{pid}/environ").read_bytes():
                return pid
        time.sleep(0.05 * (attempt + 1))
    return None


def _port_open(port: int, address: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((address, port)) == 0


def _launch(svc: Service) -> subprocess.Popen[bytes]:
    LOGS.mkdir(parents=True, exist_ok=True)
    RUN.mkdir(parents=True, exist_ok=True)
    if svc.port and _port_open(svc.port, svc.address):
        raise SystemExit(f"port {svc.port} for {svc.name} is taken by another process")
    env = {
        **os.environ,
        **svc.env,
        "PYTHONPATH": str(PLUGINS),
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }
    env.pop("VIRTUAL_ENV", None)
    with open(LOGS / f"{svc.name}.log", "ab") as out:
        proc = subprocess.Popen(
            svc.command(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    (RUN / f"{svc.name}.pid").write_text(str(proc.pid))
    log(f"started {svc.name} (pid {proc.pid})")
    return proc


def _wait_http(svc: Service, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Our own child: poll() is the truth (its cmdline may be mid-retitle by gunicorn).
        if proc.poll() is not None:
            raise SystemExit(f"{svc.name} exited; see {LOGS / (svc.name + '.log')}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{svc.port}/", timeout=5)
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer means the application is loaded
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{svc.name} did not answer on port {svc.port} in {timeout:.0f} s")


def _wait_listening(svc: Service, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{svc.name} exited; see {LOGS / (svc.name + '.log')}")
        if (svc.socket and Path(svc.socket).exists()) or (svc.port and not svc.socket and _port_open(svc.port, svc.address)):
            return
        if not svc.socket and not svc.port:
            return  # nothing to wait for
        time.sleep(0.3)
    raise SystemExit(f"{svc.name} did not come up in {timeout:.0f} s")


def start_services(names: set[str] | None = None) -> None:
    chosen = [s for s in services() if names is None or s.name in names]
    started = []
    for svc in chosen:
        if _pid(svc) is None:
            proc = _launch(svc)
            if svc.argv:  # the real sandbox's daemons: the next ones need them up
                _wait_listening(svc, proc)
            else:
                started.append((svc, proc))
    for svc, proc in started:
        if svc.port:
            _wait_http(svc, proc)
    if started:
        time.sleep(1)  # the daemons die early when their configuration is wrong
        for svc, proc in started:
            if proc.poll() is not None:
                raise SystemExit(f"{svc.name} exited; see {LOGS / (svc.name + '.log')}")


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def stop(timeout: float = 15) -> None:
    running = [(s, p) for s in reversed(services()) if (p := _pid(s)) is not None]
    for svc, pid in running:
        _signal(pid, signal.SIGTERM)
        log(f"stopping {svc.name} (pid {pid})")
    deadline = time.monotonic() + timeout
    for svc, pid in running:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        _signal(pid, signal.SIGKILL)
        (RUN / f"{svc.name}.pid").unlink(missing_ok=True)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def kill(name: str) -> None:
    svc = next((s for s in services() if s.name == name), None)
    if svc is None:
        raise SystemExit(f"unknown service {name!r}")
    pid = _pid(svc)
    if pid is not None:
        _signal(pid, signal.SIGKILL)
        while Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/cmdline").read_bytes():
            _reap(pid)
            time.sleep(0.05)
        log(f"killed {name} (pid {pid})")


def status() -> int:
    down = 0
    for svc in services():
        pid = _pid(svc)
        answering = "" if svc.port is None else (" port open" if _port_open(svc.port, svc.address) else " port closed")
        print(f"{svc.name:16} {'running' if pid else 'stopped':8} {pid or '':>7}{answering}")
        down += pid is None
    return 3 if down else 0


# ---------------------------------------------------------------- installation


def _run(*cmd: str | Path, env: dict[str, str] | None = None) -> None:
    log(" ".join(str(c) for c in cmd[:4]) + (" ..." if len(cmd) > 4 else ""))
    full_env = {
        **os.environ,
        "PYTHONPATH": str(PLUGINS),
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
        **(env or {}),
    }
    full_env.pop("VIRTUAL_ENV", None)
    subprocess.run([str(c) for c in cmd], check=True, env=full_env, stdin=subprocess.DEVNULL)


def _step(name: str, fingerprint: str = "1") -> bool:
    """True when step ``name`` already ran with this fingerprint."""
    marker = DONE / name
    return marker.exists() and marker.read_text() == fingerprint


def _mark(name: str, fingerprint: str = "1") -> None:
    DONE.mkdir(parents=True, exist_ok=True)
    (DONE / name).write_text(fingerprint)


def _venv_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in [*_requirements(), HERE / "constraints.txt", *sorted(PLUGINS.rglob("*.py*"))]:
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _requirements() -> list[Path]:
    return [HERE / "requirements.txt", *([HERE / "requirements-real.txt"] if REAL else [])]


def install_venv() -> None:
    fingerprint = _venv_fingerprint()
    if _step("venv", fingerprint):
        return
    if not (BIN / "python").exists():
        log(f"creating {VENV}")
        base = getattr(sys, "_base_executable", sys.executable)
        _run(base, "-m", "venv", VENV)
        _run(BIN / "pip", "install", "-q", "--upgrade", "pip")
    log("installing Keystone, Glance, Placement, Nova and Neutron (a few minutes the first time)")
    reqs = [arg for path in _requirements() for arg in ("-r", str(path))]
    _run(BIN / "pip", "install", "-q", *reqs, "-c", HERE / "constraints.txt")
    _run(BIN / "pip", "install", "-q", "--no-deps", "--force-reinstall", PLUGINS)
    # Nova loads compute drivers from its own nova.virt package only: a one-line shim there.
    virt = subprocess.run(
        [str(BIN / "python"), "-c", "import nova.virt, os; print(os.path.dirname(nova.virt.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(virt, "visa_sandbox.py").write_text(
        "from sandbox_plugins.compute import SandboxDriver  # noqa: F401\n"
    )
    _mark("venv", fingerprint)


def _owns_databases() -> bool:
    # (A state directory from before the "databases" marker has filled the databases itself.)
    return _step("databases") or any(_step(f"{s}-db") for s in ("keystone", "glance", "placement", "nova", "neutron"))


def _refuse_to_take_over() -> None:
    """A new state directory drops the databases it finds: never while another sandbox runs on them."""
    if not REAL and not _owns_databases() and _port_open(5000):
        raise SystemExit(
            f"[sandbox] another sandbox answers on 127.0.0.1:5000 and uses the databases {configs.DB_PREFIX}*: "
            f"one started from the new state directory {STATE} would drop them under it. Point "
            "VISA_OS_SANDBOX_STATE at that sandbox's state directory (or stop that sandbox first)."
        )


def install_databases() -> None:
    py = BIN / "python"
    # A new state directory starts from new databases: an earlier sandbox's (another checkout,
    # a destroyed state) would not match its keys and node identity.
    owned = _owns_databases()
    _run(py, HERE / "bootstrap.py", "databases", PG, *([] if owned else ["--fresh"]))
    _mark("databases")
    etc = STATE / "etc"
    if not _step("keystone-db"):
        kconf = ["--config-file", etc / "keystone/keystone.conf"]
        _run(BIN / "keystone-manage", *kconf, "db_sync")
        _run(
            BIN / "keystone-manage",
            *kconf,
            "fernet_setup",
            "--keystone-user",
            "root",
            "--keystone-group",
            "root",
        )
        _run(
            BIN / "keystone-manage",
            *kconf,
            "credential_setup",
            "--keystone-user",
            "root",
            "--keystone-group",
            "root",
        )
        url = f"{configs.KEYSTONE}/v3/"
        _run(
            BIN / "keystone-manage", *kconf, "bootstrap", "--bootstrap-password", configs.ADMIN_PASSWORD,
            "--bootstrap-admin-url", url, "--bootstrap-public-url", url, "--bootstrap-internal-url", url,
            "--bootstrap-region-id", "RegionOne",
        )  # fmt: skip
        _mark("keystone-db")
    if not _step("glance-db"):
        _run(BIN / "glance-manage", "--config-file", etc / "glance/glance-api.conf", "db_sync")
        _mark("glance-db")
    if not _step("placement-db"):
        _run(BIN / "placement-manage", "--config-file", etc / "placement/placement.conf", "db", "sync")
        _mark("placement-db")
    if not _step("nova-db"):
        nconf = ["--config-file", etc / "nova/nova.conf"]
        manage = BIN / "nova-manage"
        _run(manage, *nconf, "api_db", "sync")
        _run(manage, *nconf, "cell_v2", "map_cell0", "--database_connection", configs.db_url(PG, configs.db("nova_cell0")))
        cells = subprocess.run(
            [str(manage), *map(str, nconf), "cell_v2", "list_cells"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if " cell1 " not in cells:
            _run(manage, *nconf, "cell_v2", "create_cell", "--name", "cell1")
        _run(manage, *nconf, "db", "sync")
        _mark("nova-db")
    if not _step("neutron-db"):
        _run(py, HERE / "bootstrap.py", "neutron-tables", PG)
        _run(
            BIN / "neutron-db-manage", "--config-file", etc / "neutron/neutron.conf",
            "--config-file", etc / "neutron/ml2_conf.ini", "stamp", "heads",
        )  # fmt: skip
        _mark("neutron-db")


def install() -> None:
    t0 = time.monotonic()
    _refuse_to_take_over()
    STATE.mkdir(parents=True, exist_ok=True)
    install_venv()
    configs.render(STATE, VENV, PG)
    install_databases()
    log(f"installed in {time.monotonic() - t0:.0f} s")


def start() -> None:
    t0 = time.monotonic()
    install()
    if REAL:
        rabbit = STATE / "data/rabbitmq"
        for sub in ("mnesia", "log"):
            (rabbit / sub).mkdir(parents=True, exist_ok=True)
        (rabbit / "enabled_plugins").write_text("[].\n")
        Path("/run/libvirt").mkdir(parents=True, exist_ok=True)
        start_services({"rabbitmq", "virtlogd", "libvirtd", "tapbridge", "nfs-ganesha"})
    py = BIN / "python"
    start_services({"keystone"})
    # Re-run the API steps when bootstrap.py changed; they only add what is missing.
    fingerprint = hashlib.sha256(
        (HERE / "bootstrap.py").read_bytes() + os.environ.get("VISA_OS_SANDBOX_IMAGE", "").encode()
    ).hexdigest()
    if not _step("identity", fingerprint):
        _run(py, HERE / "bootstrap.py", "identity")
        _mark("identity", fingerprint)
    compute = next(s for s in services() if s.name == "nova-compute")
    compute_was_down = _pid(compute) is None
    if compute_was_down and not (STATE / "data/nova/compute_id").exists():
        # A state from before the driver kept its node identity: take it from Nova's database.
        _run(py, HERE / "bootstrap.py", "node-identity", PG, STATE / "data/nova", configs.COMPUTE_HOST)
    start_services()
    if compute_was_down and _step("resources", fingerprint):
        # A restart: say so now if nova-compute does not come back (it refuses to start when
        # its node identity is lost), rather than at the first server.
        _run(py, HERE / "bootstrap.py", "wait-compute", "--fresh")
    if not _step("resources", fingerprint):
        _run(py, HERE / "bootstrap.py", "wait-compute")
        _run(BIN / "nova-manage", "--config-file", STATE / "etc/nova/nova.conf", "cell_v2", "discover_hosts")
        _run(py, HERE / "bootstrap.py", "resources")
        _mark("resources", fingerprint)
    log(f"sandbox up in {time.monotonic() - t0:.1f} s")
    print(credentials_text("--env"))


def destroy() -> None:
    stop()
    if (BIN / "python").exists():
        drop = "; ".join(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in configs.DATABASES)
        code = (
            "import psycopg2,sys; c=psycopg2.connect(sys.argv[1]); c.autocommit=True; "
            f"[c.cursor().execute(q) for q in {drop!r}.split('; ')]"
        )
        dsn = configs.db_url(PG, "postgres").replace("postgresql+psycopg2://", "postgresql://")
        subprocess.run([str(BIN / "python"), "-c", code, dsn], check=True)
    subprocess.run(["rm", "-rf", str(STATE)], check=True)
    log("sandbox destroyed")


# ---------------------------------------------------------------- credentials


def credentials() -> dict[str, object]:
    """The openstack cloud configuration visa uses (``clouds`` row config)."""
    return {
        "auth_url": f"{configs.KEYSTONE}/v3",
        "username": "visa",
        "password": "visa-sandbox",
        "project_name": "visa",
        "user_domain_name": "Default",
        "project_domain_name": "Default",
        "region_name": "RegionOne",
        "network": "visa-net",
        "security_groups": ["default"],
        # Placement reads (visa's capacity view) need a service account (bootstrap.py).
        "placement": {"username": "visa-capacity", "password": "visa-capacity-sandbox", "project_name": "service"},
    }


def credentials_text(style: str) -> str:
    creds = credentials()
    if style == "--json":
        return json.dumps(creds, indent=2)
    keys = (
        "auth_url",
        "username",
        "password",
        "project_name",
        "user_domain_name",
        "project_domain_name",
        "region_name",
    )
    lines = [f"export OS_{k.upper()}={creds[k]}" for k in keys]
    lines.append("# visa cloud config (kind openstack):")
    lines.append("# " + json.dumps(creds))
    return "\n".join(lines)


# ---------------------------------------------------------------- the real sandbox's namespace


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ip", *args], check=check, capture_output=True)


def ensure_netns() -> None:
    """The namespace, its loopback, and the VMs' bridge (their gateway) inside it."""
    if not Path(f"/run/netns/{NETNS}").exists():
        _ip("netns", "add", NETNS)
        log(f"network namespace {NETNS} created")
    _ip("-n", NETNS, "link", "set", "lo", "up")
    if _ip("-n", NETNS, "link", "show", configs.BRIDGE, check=False).returncode != 0:
        _ip("-n", NETNS, "link", "add", configs.BRIDGE, "type", "bridge")
        _ip("-n", NETNS, "addr", "add", f"{configs.BRIDGE_ADDRESS}/24", "dev", configs.BRIDGE)
    _ip("-n", NETNS, "link", "set", configs.BRIDGE, "up")


def remove_netns() -> None:
    if Path(f"/run/netns/{NETNS}").exists():
        _ip("netns", "del", NETNS, check=False)
        log(f"network namespace {NETNS} removed")


def in_netns(argv: list[str]) -> None:
    """Run this command again inside the namespace (its processes inherit it)."""
    if os.environ.get("VISA_OS_SANDBOX_IN_NETNS") == NETNS:
        return
    ensure_netns()
    os.environ["VISA_OS_SANDBOX_IN_NETNS"] = NETNS
    os.execvp("ip", ["ip", "netns", "exec", NETNS, sys.executable, str(Path(__file__).resolve()), *argv])


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    cmd, args = argv[0], argv[1:]
    if REAL and cmd == "facility":
        data = STATE / "data/facility"
        print(json.dumps({"visitor": str(data / "visitor"), "processed": str(data / "processed")}))
        return 0
    if REAL and cmd in ("install", "start", "stop", "status", "kill", "destroy"):
        if cmd in ("stop", "destroy", "status", "kill") and not Path(f"/run/netns/{NETNS}").exists():
            if cmd == "destroy":
                destroy()
            if cmd == "status":
                print(f"network namespace {NETNS} absent: nothing runs")
                return 3
            return 0
        if cmd in ("install", "start") and os.environ.get("VISA_OS_SANDBOX_IN_NETNS") != NETNS:
            STATE.mkdir(parents=True, exist_ok=True)
            install_venv()  # PyPI and Debian's archive are reached from the machine's own namespace only
            if cmd == "start" and not os.environ.get("VISA_OS_SANDBOX_IMAGE"):
                built = subprocess.run(
                    [sys.executable, str(HERE.parent.parent / "images/recipes/build.py"), "sandbox"],
                    check=True, stdout=subprocess.PIPE, text=True,
                )
                os.environ["VISA_OS_SANDBOX_IMAGE"] = built.stdout.strip().splitlines()[-1]
        in_netns(argv)
        if cmd == "stop":
            stop()
            remove_netns()
            return 0
        if cmd == "destroy":
            destroy()
            remove_netns()
            return 0
    if cmd == "install":
        install()
    elif cmd == "start":
        start()
    elif cmd == "stop":
        stop()
    elif cmd == "status":
        return status()
    elif cmd == "credentials":
        print(credentials_text(args[0] if args else "--env"))
    elif cmd == "kill" and args:
        kill(args[0])
    elif cmd == "destroy":
        destroy()
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
