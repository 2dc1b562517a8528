"""Many replicas, no dropped desktop, on real processes: two web replicas (`visa web`), two
gateways (`visa gateway`), two schedulers (`visa scheduler`) and one PostgreSQL, behind the
shipped nginx configuration (deploy/nginx/visa.conf on loopback ports), the instances on the
local cloud and the desktop a real Xtigervnc.

* a desktop open in Chromium survives the kill of the gateway serving it: nginx sends the
  page's new connection to the other gateway, the same instance, within 5 s;
* an event raised on one web replica reaches a browser whose pages come from the other (the
  event stream is a gateway's);
* a rolling restart of both web replicas, one at a time, loses no request accepted under a
  steady load of GETs and POSTs: no 5xx, no connection error, each POST done once;
* a SIGKILL of the scheduler leader hands its jobs to the other with nothing done twice;
* the event raised on one replica reaches the other's browser within 1 s (PostgreSQL's
  notifications, not a poll);
* commands (carried out by the schedulers' workers): a cloud that hangs does not delay another
  cloud's command; the command of a claimer that is SIGKILLed is given to the other after its
  missed heartbeats, and never while its claimer still beats.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.factories import empty_database
from tests.gateway.conftest import (  # noqa: F401  (vnc: the real desktop fixture)
    OTHER_UID,
    UID,
    Processes,
    Vnc,
    World,
    free_port,
    make_world,
    vnc,
    wait_port,
)
from tests.gateway.test_separate_process import (
    BIN,
    EXPECTED_BROWSER_ERRORS,
    _log_in,
    _wait_http,
    nginx_config,
    web_argv,
)
from tests.scheduler.test_leader import _holder, _wait, _wave
from visa.actor import actor_for
from visa.announcements.models import SystemNotification
from visa.auth.tokens import create_api_token
from visa.clock import system_clock
from visa.clouds.models import Cloud
from visa.db import Database
from visa.instances.models import CommandAction, CommandState, Instance, InstanceCommand, InstanceState
from visa.migrate import upgrade
from visa.users.models import Role, RoleGrant, User

pytestmark = pytest.mark.integration

SECRET_KEY = "replicas-share-this-secret-key-0123456789"


@dataclass
class Stack:
    root: Path
    database: Database
    world: World
    procs: Processes
    env: dict[str, str]
    base: str
    webs: list[int]
    gateways: list[int]
    web_procs: dict[int, subprocess.Popen] = field(default_factory=dict)
    gateway_procs: dict[int, subprocess.Popen] = field(default_factory=dict)
    schedulers: dict[int, subprocess.Popen] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def start_web(self, port: int) -> None:
        self.web_procs[port] = proc = self.procs.start(web_argv(port), env=self.env)
        _wait_http(f"http://127.0.0.1:{port}/health", proc)

    def start_gateway(self, port: int) -> None:
        argv = [str(BIN / "visa"), "gateway", "--host", "127.0.0.1", "--port", str(port)]
        self.gateway_procs[port] = proc = self.procs.start(argv, env=self.env)
        _wait_http(f"http://127.0.0.1:{port}/health", proc)

    def desktops(self, port: int) -> float:
        """Open desktop relays of one gateway, from its /metrics."""
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False).text
        for line in text.splitlines():
            if line.startswith('visa_gateway_connections{kind="desktop"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def served(self, port: int) -> int:
        """Requests a web replica logged (its JSON access lines)."""
        log = self.root / f"visa-{self.procs.procs.index(self.web_procs[port])}.log"
        return sum('"visa.access"' in line for line in log.read_text(errors="replace").splitlines())


@pytest.fixture(scope="module")
def stack(vnc: Vnc, pg_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # noqa: F811
    from tests.browser import require_chromium

    require_chromium()
    root = tmp_path_factory.mktemp("replicas")
    database = Database(pg_database_url)
    upgrade(database.engine)
    empty_database(database)
    world = make_world(database, system_clock, vnc_port=vnc.port)
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VISA_") and k != "PROMETHEUS_MULTIPROC_DIR"},
        "VISA_DATABASE_URL": pg_database_url, "VISA_SECRET_KEY": SECRET_KEY,
        "VISA_DATA_DIR": str(root / "data"), "VISA_BASE_URL": base,
        "VISA_USER_CONTENT_DOMAIN": f"instances.localhost:{port}", "VISA_GATEWAY__EMBEDDED": "false",
        "VISA_SCHEDULER__ENABLED_IN_WEB": "false", "VISA_LOG_JSON": "true", "PYTHONUNBUFFERED": "1",
        # The leader's jobs: lifecycle every second (what the handover test counts), the
        # others out of the way of the fixtures' instances, which no cloud knows.
        "VISA_SCHEDULER__LEASE_SECONDS": "5", "VISA_SCHEDULER__LIFECYCLE_SECONDS": "1",
        "VISA_SCHEDULER__SYNC_SECONDS": "3600", "VISA_SCHEDULER__ACTIVITY_SECONDS": "3600",
        "VISA_SCHEDULER__CLEANUP_SECONDS": "3600",
        # A claim lives 3 s after its claimer's last beat (the commands test kills one).
        "VISA_SCHEDULER__COMMAND_HEARTBEAT_SECONDS": "1",
    }  # fmt: skip
    procs = Processes(root)
    s = Stack(root, database, world, procs, env, base, [free_port(), free_port()], [free_port(), free_port()])
    with database.unit_of_work() as session:
        admin = session.scalar(select(User).where(User.username == "owner"))
        assert admin is not None
        admin.grants.append(RoleGrant(role=Role.ADMIN, granted_at=system_clock.now()))
        session.flush()
        for name in ("owner", "stranger"):
            user = session.scalar(select(User).where(User.username == name))
            _, s.tokens[name] = create_api_token(actor_for(user, system_clock.now()), session, system_clock, name="t")
    try:
        for web in s.webs:
            s.start_web(web)
        for gateway in s.gateways:
            s.start_gateway(gateway)
        for _ in range(2):
            p = procs.start([str(BIN / "visa"), "scheduler"],
                            env={**env, "VISA_SCHEDULER__METRICS_PORT": str(free_port())})  # fmt: skip
            s.schedulers[p.pid] = p
        nginx = procs.start([shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(root), "-e",
                             str(root / "error.log"), "-c", str(nginx_config(root, port, s.webs, s.gateways))])  # fmt: skip
        wait_port(port, nginx)
        yield s
    finally:
        procs.stop()
        empty_database(database)
        database.dispose()


def _context(browser, stack: Stack):
    ctx = browser.new_context(base_url=stack.base, ignore_https_errors=True, viewport={"width": 1024, "height": 700})
    # The page's own EventSource, watched: every event it receives, with when.
    ctx.add_init_script("""(() => {
        const Real = window.EventSource;
        window.__events = [];
        window.EventSource = class extends Real {
            addEventListener(name, fn, ...rest) {
                return super.addEventListener(name, (ev) => {
                    window.__events.push({ name, data: ev.data, at: Date.now() });
                    return fn(ev);
                }, ...rest);
            }
        };
    })();""")
    return ctx


def test_a_desktop_survives_the_kill_of_the_gateway_serving_it(stack: Stack) -> None:
    from tests.browser import allow_errors, chromium

    allow_errors(*EXPECTED_BROWSER_ERRORS)
    with chromium() as browser:
        ctx = _context(browser, stack)
        page = ctx.new_page()
        page.set_default_timeout(30_000)
        _log_in(page, stack.base, "owner")
        page.goto(f"/instances/{UID}/desktop")
        page.wait_for_selector('body[data-desktop="connected"]', state="attached")
        first = page.evaluate("window.visaDesktop.session.url")
        serving = [p for p in stack.gateways if stack.desktops(p) > 0]
        assert len(serving) == 1, serving
        (dead,), (other,) = serving, [p for p in stack.gateways if p not in serving]

        os.killpg(stack.gateway_procs[dead].pid, signal.SIGKILL)
        stack.gateway_procs[dead].wait(10)
        killed = time.monotonic()
        page.wait_for_selector('body[data-desktop="reconnecting"]', state="attached", timeout=10_000)
        # Nobody restarts the killed gateway: the other one takes the desktop, within 5 s.
        page.wait_for_selector('body[data-desktop="connected"]', state="attached", timeout=5_000)
        back = time.monotonic() - killed
        second = page.evaluate("window.visaDesktop.session.url")
        assert f"/ws/desktop/{UID}" in first and f"/ws/desktop/{UID}" in second  # the same instance
        assert first != second  # a fresh one-time token
        _wait(lambda: stack.desktops(other) == 1, 5, "the desktop on the other gateway")
        assert page.is_hidden("#btn-reconnect")
        print(f"\ndesktop back {back:.1f} s after the SIGKILL of its gateway")
        ctx.close()
    stack.start_gateway(dead)


def test_an_event_raised_on_one_replica_reaches_a_browser_on_the_other(stack: Stack) -> None:
    from tests.browser import chromium

    with chromium() as browser:
        ctx = _context(browser, stack)
        page = ctx.new_page()
        page.set_default_timeout(30_000)
        before = {p: stack.served(p) for p in stack.webs}
        _log_in(page, stack.base, "stranger")
        _wait(lambda: page.evaluate("window.__events.some(e => e.name === 'ready')"), 15, "the event stream")
        pages = {p: stack.served(p) - before[p] for p in stack.webs}
        assert sorted(pages.values())[0] == 0 and sum(pages.values()) > 0, pages  # one replica served them
        other = next(p for p, n in pages.items() if n == 0)
        # The event stream is a gateway's, not a web replica's.
        r = httpx.get(f"http://127.0.0.1:{other}/api/events", trust_env=False)
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")

        sent = time.time()
        r = httpx.post(f"http://127.0.0.1:{other}/api/instances/{OTHER_UID}/stop", trust_env=False,
                       headers={"Authorization": f"Bearer {stack.tokens['stranger']}"})  # fmt: skip
        assert r.status_code == 202, r.text
        find = """uid => window.__events.find(e => e.name === 'instance'
            && JSON.parse(e.data).instance.uid === uid && JSON.parse(e.data).instance.state !== 'ACTIVE') || null"""
        # Polled from here: the page's CSP forbids the eval Playwright's wait_for_function needs.
        event = _wait(lambda: page.evaluate(find, OTHER_UID), 10, "the event in the browser")
        assert json.loads(event["data"])["instance"]["state"] in {"STOPPING", "STOPPED", "ERROR"}
        latency = event["at"] / 1000 - sent
        print(f"\nevent from the other replica in the browser {latency:.2f} s after the request")
        assert latency < 1.0  # notified, not polled
        ctx.close()


def test_a_rolling_restart_of_the_web_replicas_loses_no_request(stack: Stack) -> None:
    results: collections.Counter[str] = collections.Counter()
    created: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()
    marker = f"rolling-{time.time_ns()}"

    def client(n: int) -> None:
        headers = {"Authorization": f"Bearer {stack.tokens['owner']}"}
        with httpx.Client(base_url=stack.base, verify=False, trust_env=False, timeout=30, headers=headers) as http:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    if i % 3 == 0:
                        r = http.post("/api/admin/notifications", json={"message": f"{marker} {n}-{i}"})
                        outcome = f"POST {r.status_code}"
                        if r.status_code == 201:
                            with lock:
                                created.append(r.json()["id"])
                    else:
                        r = http.get("/api/instances" if i % 2 else "/api/admin/instances?per_page=5")
                        outcome = f"GET {r.status_code}"
                except httpx.HTTPError as exc:
                    outcome = f"{type(exc).__name__}"
                with lock:
                    results[outcome] += 1

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(client, n) for n in range(6)]
        time.sleep(2)
        for port in stack.webs:  # one at a time, each drained (SIGTERM), started again, then the next
            proc = stack.web_procs[port]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
            time.sleep(1)  # the other replica alone for a while
            stack.start_web(port)
            time.sleep(1)
        # And a reload of each (SIGHUP: new workers, the listening socket kept).
        for port in stack.webs:
            stack.web_procs[port].send_signal(signal.SIGHUP)
            time.sleep(2)
        stop.set()
        for f in futures:
            f.result()
    assert results.keys() <= {"GET 200", "POST 201"}, results
    assert results["POST 201"] > 10 and results["GET 200"] > 20, results
    with stack.database.sessionmaker() as s:
        rows = s.scalars(select(SystemNotification.id).where(SystemNotification.message.like(f"{marker} %"))).all()
    assert sorted(rows) == sorted(created)  # each accepted POST done once
    print(f"\nrolling restart under load: {dict(results)}")


def test_a_killed_scheduler_leader_hands_over_with_nothing_done_twice(stack: Stack) -> None:
    world = {"cloud": stack.world.instance.cloud_id, "plan": stack.world.instance.plan_id,
             "user": stack.world.stranger.id}  # fmt: skip
    first = _wait(lambda: _holder(stack.database), 30, "a leader")
    leader = int(first.split(":")[1])
    assert leader in stack.schedulers
    ids = _wave(stack.database, world, 10, 900)

    def done(wanted: list[int]) -> bool:  # the idle ones deleted (asked for), the others warned
        with stack.database.sessionmaker() as s:
            rows = s.execute(select(Instance.id, Instance.uid, Instance.inactivity_warned_at)
                             .where(Instance.id.in_(wanted))).all()  # fmt: skip
            deleting = set(s.scalars(select(InstanceCommand.instance_id).where(
                InstanceCommand.instance_id.in_(wanted), InstanceCommand.action == CommandAction.DELETE)))  # fmt: skip
        return all(i in deleting if int(uid[-4:]) < 10 else warned is not None for i, uid, warned in rows)

    _wait(lambda: done(ids), 60, "the leader's work")
    os.killpg(stack.schedulers[leader].pid, signal.SIGKILL)
    stack.schedulers[leader].wait(10)
    ids += _wave(stack.database, world, 10, 901)  # work arriving while nobody leads
    second = _wait(lambda: (h := _holder(stack.database)) and h != first and h, 30, "a new leader")
    assert int(second.split(":")[1]) in stack.schedulers and int(second.split(":")[1]) != leader
    _wait(lambda: done(ids), 60, "the new leader's work")
    time.sleep(3)  # a late duplicate would show itself
    with stack.database.sessionmaker() as s:
        instances = s.scalars(select(Instance).where(Instance.id.in_(ids))).all()
        deletes = collections.Counter(s.scalars(select(InstanceCommand.instance_id).where(
            InstanceCommand.instance_id.in_(ids), InstanceCommand.action == CommandAction.DELETE)))  # fmt: skip
    old = [i for i in instances if int(i.uid[-4:]) < 10]
    new = [i for i in instances if int(i.uid[-4:]) >= 10]
    assert len(old) == len(new) == 20
    assert all(deletes[i.id] == 1 for i in old), deletes  # each deleted once, by one leader or the other
    assert all(i.inactivity_warned_at is not None and deletes[i.id] == 0 for i in new)


def _queue(stack: Stack, instance_id: int, action: CommandAction) -> int:
    """A command as the services queue one: its row (the commit tells every process's worker)."""
    with stack.database.unit_of_work() as s:
        cmd = InstanceCommand(instance_id=instance_id, action=action, state=CommandState.PENDING,
                              created_at=system_clock.now())
        s.add(cmd)
        s.flush()
        return cmd.id


def _command(stack: Stack, cid: int) -> InstanceCommand:
    with stack.database.sessionmaker() as s:
        cmd = s.get(InstanceCommand, cid)
        assert cmd is not None
        return cmd


def test_commands_a_hung_cloud_stalls_only_itself_and_a_dead_claimers_command_goes_to_the_other(stack: Stack) -> None:
    alive = {pid: p for pid, p in stack.schedulers.items() if p.poll() is None}
    while len(alive) < 2:  # the leader test killed one
        p = stack.procs.start([str(BIN / "visa"), "scheduler"],
                              env={**stack.env, "VISA_SCHEDULER__METRICS_PORT": str(free_port())})  # fmt: skip
        stack.schedulers[p.pid] = alive[p.pid] = p
    time.sleep(3)  # both workers up, listening
    # A cloud that accepts connections and never answers: its API calls hang (a 120 s timeout).
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(64)
    try:
        with stack.database.unit_of_work() as s:
            hung = Cloud(name="hung", kind="openstack", enabled=True, created_at=system_clock.now(), config={
                "auth_url": f"http://127.0.0.1:{blackhole.getsockname()[1]}/v3", "username": "u", "password": "p",
                "project_name": "p", "timeout": 120})  # fmt: skip
            s.add(hung)
            s.flush()
            main = s.get(Instance, stack.world.instance.id)
            assert main is not None
            stuck = Instance(uid="hung00000001", name="hung", owner_id=main.owner_id, plan_id=main.plan_id,
                             cloud_id=hung.id, state=InstanceState.STOPPED, secret="x" * 24,
                             cloud_server_id="hung-server", created_at=system_clock.now(),
                             terminates_at=main.terminates_at)  # fmt: skip
            local = Instance(uid="local0000001", name="local", owner_id=main.owner_id, plan_id=main.plan_id,
                             cloud_id=main.cloud_id, state=InstanceState.STOPPED, secret="x" * 24,
                             cloud_server_id="no-such-session", created_at=system_clock.now(),
                             terminates_at=main.terminates_at)  # fmt: skip
            s.add_all([stuck, local])
            s.flush()
            stuck_id, local_id = stuck.id, local.id
        hung_cmd = _queue(stack, stuck_id, CommandAction.START)
        first = _wait(lambda: (c := _command(stack, hung_cmd)).state == CommandState.RUNNING and c.claimed_by, 5,
                      "the hung cloud's command claimed")
        claimer = int(first.split(":")[1])
        assert claimer in alive

        # Another cloud's command, queued while the hung one runs, is carried out at once.
        queued = time.monotonic()
        local_cmd = _queue(stack, local_id, CommandAction.STOP)
        _wait(lambda: _command(stack, local_cmd).finished_at is not None, 5, "the other cloud's command")
        took = time.monotonic() - queued
        assert took < 4.0, took  # not behind the hung command (which never ends)
        assert _command(stack, hung_cmd).state == CommandState.RUNNING

        # A claimer that beats keeps its command for longer than the missed-heartbeat limit (3 s).
        beats = set()
        for _ in range(12):
            cmd = _command(stack, hung_cmd)
            assert cmd.state == CommandState.RUNNING and cmd.claimed_by == first
            beats.add(cmd.heartbeat_at)
            time.sleep(0.5)
        assert len(beats) >= 4  # it beat (every second)

        os.killpg(alive[claimer].pid, signal.SIGKILL)
        alive[claimer].wait(10)
        killed = time.monotonic()
        holders = [first]

        def other_claimer() -> str | None:
            cmd = _command(stack, hung_cmd)
            if cmd.claimed_by and cmd.claimed_by != holders[-1]:
                holders.append(cmd.claimed_by)
            return cmd.claimed_by if cmd.state == CommandState.RUNNING and cmd.claimed_by != first else None

        second = _wait(other_claimer, 10, "the command given to the other worker")
        handed = time.monotonic() - killed
        assert int(second.split(":")[1]) in alive and int(second.split(":")[1]) != claimer
        assert handed < 3 + 3, handed  # 3 missed beats, then the next beat of the other
        assert holders == [first, second]  # never shared: the one claimer, then the other
        print(f"\nanother cloud's command done in {took:.2f} s beside a hung one; "
              f"a dead claimer's command taken over {handed:.1f} s after the SIGKILL")
    finally:
        blackhole.close()  # the hung calls now fail: the command ends, once
        with stack.database.unit_of_work() as s:
            for cloud in s.scalars(select(Cloud).where(Cloud.name == "hung")):
                cloud.enabled = False
