"""The activity probe against a real sshd on loopback: visa's own key, the real probe script
(forced command), a busy process of the owner and X input seen through xprintidle."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from tests.processes import free_port, wait_port
from tests.services import add_instance
from visa.clock import FrozenClock
from visa.instances import lifecycle, probe_keys
from visa.instances.activity import ActivityProbe
from visa.instances.models import Instance
from visa.provisioning import host_keys
from visa.services import Services

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OWNER = "visaprobeowner"
PYTHON = "/usr/bin/python3"


def _need(*programs: str) -> None:
    missing = [p for p in programs if not (shutil.which(p) or Path(p).exists())]
    if missing:
        pytest.skip(f"missing {', '.join(missing)}")
    if os.geteuid() != 0:
        pytest.skip("needs root (a local account, sshd)")




@pytest.fixture
def owner() -> Iterator[str]:
    subprocess.run(["userdel", "-r", OWNER], capture_output=True)
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", OWNER], check=True)
    try:
        yield OWNER
    finally:
        subprocess.run(["pkill", "-KILL", "-u", OWNER], capture_output=True)  # only the test account's processes
        subprocess.run(["userdel", "-r", OWNER], capture_output=True)


@pytest.fixture
def display(tmp_path: Path) -> Iterator[str]:
    _need("Xvfb", "xprintidle", "xdotool")
    for n in range(140, 190):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            break
    xvfb = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not Path(f"/tmp/.X11-unix/X{n}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f":{n}"
    finally:
        xvfb.terminate()
        xvfb.wait(5)


@pytest.fixture
def start_sshd(tmp_path: Path, services: Services, owner: str, display: str) -> Iterator[Callable[[str | None], int]]:
    """sshd on a loopback high port; root's only key is visa's probe key, forced to run the probe.

    Its host key is the one given (as cloud-init writes visa's key for the instance), or a
    key of its own (an impostor's) when given none."""
    _need("/usr/sbin/sshd", PYTHON)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []

    def start(host_key: str | None) -> int:
        return _start_sshd(tmp_path / f"sshd{len(procs)}", services, owner, display, host_key, procs)

    try:
        yield start
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(5)


def _start_sshd(d: Path, services: Services, owner: str, display: str, host_key: str | None,
                procs: list[subprocess.Popen[bytes]]) -> int:
    (d / "keys").mkdir(parents=True)
    if host_key is None:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True)
    else:
        (d / "host_key").write_text(host_key)
        (d / "host_key").chmod(0o600)
    # The real probe script, with its environment file and X idle helper moved into the test's directory.
    (d / "instance.env").write_text(f"VISA_OWNER={owner}\nVISA_VNC_PORT=5901\n")
    (d / "x-idle").write_text(f"#!/bin/sh\nexec env DISPLAY={display} xprintidle\n")
    (d / "x-idle").chmod(0o755)
    source = (ROOT / "visa/provisioning/files/probe.py").read_text()
    source = source.replace('"/etc/visa/instance.env"', repr(str(d / "instance.env")))
    source = source.replace('["sudo", "-n", "-u", OWNER, "/usr/local/libexec/visa/x-idle"]', repr([str(d / "x-idle")]))
    assert str(d / "x-idle") in source and str(d / "instance.env") in source
    (d / "probe").write_text(source)
    key = probe_keys.public_key(services.settings)
    (d / "keys" / "root").write_text(f'restrict,command="{PYTHON} {d / "probe"}" {key}\n')
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'keys'}/%u\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        "AllowUsers root\n"
    )
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "wb"))  # noqa: SIM115
    procs.append(proc)
    wait_port(port, timeout=10)
    return port


def test_probe_refuses_a_machine_whose_host_key_is_not_the_one_visa_gave_it(
    services: Services, world, clock: FrozenClock, start_sshd, owner: str
) -> None:
    """Someone answers at the instance's address with a key of their own, from the very first
    connection: trust on first use would take it; visa knows the instance's key and refuses."""
    services.settings.provisioning.probe_username = "root"
    impostor = start_sshd(None)
    with services.database.unit_of_work() as s:
        iid = add_instance(s, clock, world, address="127.0.0.1", provider_state={"ports": {"ssh": impostor}}).id
    busy = subprocess.Popen([PYTHON, "-c", "while True: pass"], user=owner, group=owner)
    try:
        result = ActivityProbe(services, sample_gap=0.5).run()
    finally:
        busy.kill()
        busy.wait()
    assert result.probed == 1 and iid in result.failed, result
    assert "host key" in result.failed[iid].lower(), result.failed
    assert result.computing == []
    with services.database.sessionmaker() as s:
        inst = s.get(Instance, iid)
        assert inst.last_compute_at is None and inst.last_interaction_at is None


def test_another_instances_host_key_is_refused(
    services: Services, world, clock: FrozenClock, start_sshd
) -> None:
    """A machine given its own key by visa cannot stand in for another instance."""
    services.settings.provisioning.probe_username = "root"
    secret = services.settings.resolved_secret_key()
    other = start_sshd(host_keys.private_openssh(secret, "other-instance"))
    with services.database.unit_of_work() as s:
        iid = add_instance(s, clock, world, uid="this-instance", address="127.0.0.1",
                           provider_state={"ports": {"ssh": other}}).id
    result = ActivityProbe(services, sample_gap=0.5).run()
    assert iid in result.failed and "host key" in result.failed[iid].lower(), result


def test_probe_reads_cpu_and_x_input_and_keeps_a_computation_alive(
    services: Services, world, clock: FrozenClock, start_sshd, owner: str, display: str
) -> None:
    services.settings.provisioning.probe_username = "root"
    uid = "probe-instance"
    sshd = start_sshd(host_keys.private_openssh(services.settings.resolved_secret_key(), uid))
    with services.database.unit_of_work() as s:
        iid = add_instance(s, clock, world, uid=uid, address="127.0.0.1",
                           provider_state={"ports": {"ssh": sshd}}).id
    probe = ActivityProbe(services, sample_gap=1.5)

    # Idle: nothing of the owner's runs; X reports the time since its last input.
    started = time.perf_counter()
    result = probe.run()
    first_probe = time.perf_counter() - started
    assert result.failed == {} and result.probed == 1
    assert result.computing == []
    with services.database.sessionmaker() as s:
        inst = s.get(Instance, iid)
        assert inst.last_compute_at is None
        assert inst.last_interaction_at is not None and inst.last_interaction_at <= clock.now()

    # Input on the desktop: the last interaction is now (to the second).
    clock.advance(minutes=5)
    subprocess.run(["xdotool", "mousemove", "10", "20"], env={**os.environ, "DISPLAY": display}, check=True)
    probe.run()
    with services.database.sessionmaker() as s:
        assert clock.now() - s.get(Instance, iid).last_interaction_at < timedelta(seconds=5)

    # A computation with no browser: the owner's process keeps a core busy.
    busy = subprocess.Popen([PYTHON, "-c", "while True: pass"], user=owner, group=owner)
    try:
        time.sleep(1)
        clock.advance(minutes=5)
        result = probe.run()  # paired with the previous report (5 s ago on this machine)
        assert result.computing == [iid], result
        with services.database.sessionmaker() as s:
            assert s.get(Instance, iid).last_compute_at == clock.now()
        # Days go by with nobody at the desktop, the computation still running: never warned.
        with services.database.unit_of_work() as s:
            s.execute(update(Instance).values(last_seen_at=clock.now() - timedelta(days=30)))
        for _ in range(4):
            clock.advance(days=1)
            assert probe.run().computing == [iid]
            r = lifecycle.run(services)
            assert not r.inactivity_warned and not r.deleted
    finally:
        busy.kill()
        busy.wait()
    # Once it stops, the instance counts as idle again from the end of the computation.
    time.sleep(1)
    clock.advance(minutes=5)
    assert probe.run().computing == []
    print(f"\nfirst probe (two reports {probe.sample_gap} s apart): {first_probe:.2f} s")


@pytest.mark.parametrize("report", [
    "head -c 300000000 /dev/zero | tr '\\0' x",  # a flood: 300 MB of report
    "while true; do printf x; sleep 0.5; done",  # a drip: a byte now and then, never silent for long
])
def test_a_hostile_machine_cannot_make_the_probe_read_without_end(
    services: Services, world, clock: FrozenClock, start_sshd, tmp_path: Path, report: str
) -> None:
    """The machine is the user's: what it answers as its report is read up to a bound of size and time."""
    from visa.instances.activity import SshReader

    services.settings.provisioning.probe_username = "root"
    uid = "hostile-instance"
    sshd = start_sshd(host_keys.private_openssh(services.settings.resolved_secret_key(), uid))
    hostile = tmp_path / "sshd0" / "report"
    hostile.write_text(f"#!/bin/sh\n{report}\n")
    hostile.chmod(0o755)
    (tmp_path / "sshd0" / "keys" / "root").write_text(
        f'restrict,command="{hostile}" {probe_keys.public_key(services.settings)}\n'
    )
    with services.database.unit_of_work() as s:
        iid = add_instance(s, clock, world, uid=uid, address="127.0.0.1", provider_state={"ports": {"ssh": sshd}}).id
    started = time.monotonic()
    result = ActivityProbe(services, SshReader(services.settings, timeout=2), sample_gap=0.1).run()
    assert time.monotonic() - started < 8
    assert iid in result.failed and "report" in result.failed[iid], result.failed
