"""1 GB in and out of an instance through visa's files API, beside ``scp`` over the same SSH.

    python -m bench.transfer               # 1 GB (1024 MiB) each way
    python -m bench.transfer --size-mb 64  # smaller (the smoke test uses 8)

A real machine's side, on loopback: a unix account of its own (``visabench``), OpenSSH's
sshd on a high port of 127.0.0.1 with the host key visa gives the instance, and the owner's
authorized_keys as the user-data writes it (visa's key, forced to run ``sftp-server``). The
web process is visa's ASGI app under uvicorn, as ``visa run`` serves it, with an instance of
the account's recorded at 127.0.0.1. The file goes up with one streamed PUT and comes back
with one GET, both checked byte for byte (sha256); ``scp`` moves the same file over the same
sshd with a key of its own, forced to ``sftp-server`` too (OpenSSH's scp speaks SFTP).

The web process's resident memory is sampled every 20 ms: it is flat when the peak during a
transfer stays near the figure at the start, whatever the file's size. Needs root (the
account, sshd). Everything it made is removed at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

import visa.models  # noqa: F401  (every mapped class known before the first query)
from tests.processes import free_port, wait_port

ACCOUNT = "visabench"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
BLOCK = 1024 * 1024
PASSWORD = "bench-transfer-password"


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """The peak VmRSS of a process while a block runs (sampled every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kb(self.pid))
            self._stop.wait(0.02)

    def __enter__(self) -> RssSampler:
        self.peak = rss_kb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_kb(self.pid))


@contextmanager
def account() -> Iterator[Path]:
    subprocess.run(["userdel", "-r", ACCOUNT], capture_output=True)
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", ACCOUNT], check=True)
    subprocess.run(["usermod", "-p", "*", ACCOUNT], check=True)  # no password, not locked
    try:
        yield Path(f"/home/{ACCOUNT}")
    finally:
        subprocess.run(["pkill", "-KILL", "-u", ACCOUNT], capture_output=True)  # this account's processes only
        subprocess.run(["userdel", "-r", ACCOUNT], capture_output=True)


@contextmanager
def sshd(work: Path, host_key: str, key_lines: list[str]) -> Iterator[int]:
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    keys = Path(tempfile.mkdtemp(prefix="visa-bench-keys-"))
    keys.chmod(0o755)  # sshd reads authorized_keys as the account
    (work / "host_key").write_text(host_key)
    (work / "host_key").chmod(0o600)
    (keys / ACCOUNT).write_text("".join(line + "\n" for line in key_lines))
    (keys / ACCOUNT).chmod(0o644)
    port = free_port()
    (work / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {work / 'host_key'}\nPidFile {work / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {keys}/%u\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin no\n"
        f"AllowUsers {ACCOUNT}\nSubsystem sftp {SFTP_SERVER}\n"
    )
    with (work / "sshd.log").open("wb") as log:
        proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(work / "sshd_config")],
                                stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_port(port, proc, timeout=10)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(5)
        shutil.rmtree(keys, ignore_errors=True)


def prepare_site(env: dict[str, str]) -> tuple[str, str, str]:
    """`visa init`, then an instance of the account's at 127.0.0.1 (its SSH port set later).
    Returns the instance's uid, visa's forced authorized_keys line and the host key."""
    visa = str(Path(sys.executable).with_name("visa"))
    subprocess.run([visa, "init"], env=env, check=True, capture_output=True, timeout=120)
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        from tests.factories import make_cloud, make_flavour, make_image, make_plan, make_user
        from visa.clock import SystemClock
        from visa.db import Database
        from visa.instances import probe_keys
        from visa.instances.models import Instance, InstanceMember, InstanceState, MemberRole
        from visa.provisioning import host_keys
        from visa.settings import Settings

        settings = Settings()
        clock = SystemClock()
        db = Database(settings.sqlalchemy_url)
        uid = secrets.token_hex(6)
        with db.unit_of_work() as s:
            # An OpenStack cloud's machine: visa reaches it over SSH only (its API is never called here).
            cloud = make_cloud(s, clock, "bench-vm", kind="openstack")
            plan = make_plan(s, make_image(s, "bench-desktop"), make_flavour(s, "bench-small"))
            owner = make_user(s, clock, ACCOUNT, password=PASSWORD, uid_number=None, gid_number=None)
            now = clock.now()
            inst = Instance(uid=uid, name="transfer", owner_id=owner.id, plan_id=plan.id, cloud_id=cloud.id,
                            state=InstanceState.ACTIVE, secret=secrets.token_hex(10), provider_state={},
                            address="127.0.0.1", created_at=now, state_changed_at=now,
                            terminates_at=now.replace(year=now.year + 1))
            inst.members.append(InstanceMember(user_id=owner.id, role=MemberRole.OWNER, created_at=now))
            s.add(inst)
        probe_keys.ensure_key(settings)
        line = f'restrict,command="{SFTP_SERVER}" {probe_keys.public_key(settings)}'
        host_key = host_keys.private_openssh(settings.resolved_secret_key(), uid)
        db.dispose()
        return uid, line, host_key
    finally:
        os.environ.clear()
        os.environ.update(saved)


def set_ssh_port(env: dict[str, str], uid: str, port: int) -> None:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        from sqlalchemy import select

        from visa.db import Database
        from visa.instances.models import Instance
        from visa.settings import Settings

        db = Database(Settings().sqlalchemy_url)
        with db.unit_of_work() as s:
            s.scalar(select(Instance).where(Instance.uid == uid)).provider_state = {"ports": {"ssh": port}}
        db.dispose()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def make_file(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(BLOCK, left))
            f.write(block)
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            yield block


def run(size: int) -> list[dict[str, object]]:
    if os.geteuid() != 0:
        raise SystemExit("bench.transfer needs root (a unix account and sshd of its own)")
    for prog in ("/usr/sbin/sshd", SFTP_SERVER, "useradd", "scp", "ssh-keygen"):
        if not (Path(prog).exists() or shutil.which(prog)):
            raise SystemExit(f"bench.transfer: {prog} is missing")
    work = Path(tempfile.mkdtemp(prefix="visa-bench-transfer-"))
    web = None
    try:
        port = free_port()
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("VISA_")},
               "VISA_DATA_DIR": str(work / "var"), "VISA_BASE_URL": f"http://127.0.0.1:{port}",
               "VISA_SECRET_KEY": secrets.token_hex(16), "VISA_SCHEDULER__ENABLED_IN_WEB": "false",
               "VISA_TRANSFERS__MAX_UPLOAD_BYTES": str(max(size, 1) * 2),
               "VISA_TRANSFERS__MAX_DOWNLOAD_BYTES": str(max(size, 1) * 2)}
        uid, visa_line, host_key = prepare_site(env)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "scp_key")], check=True)
        scp_line = f'restrict,command="{SFTP_SERVER}" ' + (work / "scp_key.pub").read_text().strip()
        source = work / "source.bin"
        digest = make_file(source, size)
        with account() as home, sshd(work, host_key, [visa_line, scp_line]) as ssh_port:
            set_ssh_port(env, uid, ssh_port)
            log = (work / "web.log").open("wb")
            web = subprocess.Popen([sys.executable, "-m", "uvicorn", "visa.asgi:create_asgi_app", "--factory",
                                    "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            wait_port(port, web, timeout=60)
            base = f"http://127.0.0.1:{port}"
            rows: list[dict[str, object]] = []
            with httpx.Client(base_url=base, timeout=300) as c:
                r = c.post("/api/login", json={"username": ACCOUNT, "password": PASSWORD})
                r.raise_for_status()
                csrf = r.json()["csrf_token"]
                files = f"/api/instances/{uid}/files"
                c.get(files).raise_for_status()  # warm: the first SSH connection, imports
                start_rss = rss_kb(web.pid)

                target = f"/home/{ACCOUNT}/bench-visa.bin"
                with RssSampler(web.pid) as up_mem:
                    t0 = time.perf_counter()
                    r = c.put(f"{files}/content", params={"path": target}, content=_chunks(source),
                              headers={"X-CSRF-Token": csrf, "Content-Length": str(size),
                                       "Content-Type": "application/octet-stream"})
                    up_s = time.perf_counter() - t0
                assert r.status_code == 201, r.text
                assert sha256_of(home / "bench-visa.bin") == digest, "the upload is not byte-identical"

                back = work / "back-visa.bin"
                with RssSampler(web.pid) as down_mem:
                    t0 = time.perf_counter()
                    with c.stream("GET", f"{files}/content", params={"path": target}) as resp, back.open("wb") as f:
                        assert resp.status_code == 200, resp.read()
                        for block in resp.iter_bytes(BLOCK):
                            f.write(block)
                    down_s = time.perf_counter() - t0
                assert sha256_of(back) == digest, "the download is not byte-identical"

            ssh_opts = ["-q", "-i", str(work / "scp_key"), "-P", str(ssh_port), "-o", "StrictHostKeyChecking=no",
                        "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"]
            t0 = time.perf_counter()
            subprocess.run(["scp", *ssh_opts, str(source), f"{ACCOUNT}@127.0.0.1:bench-scp.bin"], check=True)
            scp_up = time.perf_counter() - t0
            assert sha256_of(home / "bench-scp.bin") == digest
            t0 = time.perf_counter()
            subprocess.run(["scp", *ssh_opts, f"{ACCOUNT}@127.0.0.1:bench-scp.bin", str(work / "back-scp.bin")],
                           check=True)
            scp_down = time.perf_counter() - t0
            assert sha256_of(work / "back-scp.bin") == digest
            mb = size / BLOCK
            rows.append({"direction": "upload", "visa_mbs": mb / up_s, "scp_mbs": mb / scp_up,
                         "rss_start_mb": start_rss / 1024, "rss_peak_mb": up_mem.peak / 1024})
            rows.append({"direction": "download", "visa_mbs": mb / down_s, "scp_mbs": mb / scp_down,
                         "rss_start_mb": start_rss / 1024, "rss_peak_mb": down_mem.peak / 1024})
            return rows
    finally:
        if web is not None and web.poll() is None:
            os.killpg(web.pid, signal.SIGTERM)
            try:
                web.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(web.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.transfer", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=1024, help="MiB moved each way (default 1024: 1 GB)")
    args = ap.parse_args(argv)
    size = args.size_mb * BLOCK
    rows = run(size)
    print(f"\n{args.size_mb} MiB each way, byte-identical (sha256); web process = visa under uvicorn")
    print(f"{'direction':<10} {'visa MB/s':>10} {'scp MB/s':>10} {'web RSS start':>14} {'web RSS peak':>13} {'growth':>8}")
    for r in rows:
        growth = float(r["rss_peak_mb"]) - float(r["rss_start_mb"])  # type: ignore[arg-type]
        print(f"{r['direction']:<10} {r['visa_mbs']:>10.1f} {r['scp_mbs']:>10.1f} {r['rss_start_mb']:>11.1f} MB "
              f"{r['rss_peak_mb']:>10.1f} MB {growth:>+6.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
