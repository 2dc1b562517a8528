"""`visa check-config` and the same checks before `visa run`: clear findings, exit status 1 on errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_check_config_reports_and_fails_on_errors(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("init").exit_code == 0
    r = cli("check-config")
    assert r.exit_code == 0, r.output
    assert "ok      database" in r.output and "ok      cloud local: local" in r.output
    # What the local cloud enforces on this machine is said either way.
    assert "cloud local isolation: sessions " in r.output

    config = tmp_path / "cloud.json"
    config.write_text(json.dumps({"auth_url": "http://127.0.0.1:9/v3", "username": "visa", "project_name": "visa",
                                  "auth": {"password": {"env": "VISA_TEST_NO_SUCH_SECRET"}}}))
    assert cli("clouds", "add", "remote", "--kind", "openstack", "--config", str(config)).exit_code == 0
    r = cli("check-config")
    assert r.exit_code == 1 and "cloud remote: secrets not in the environment: auth.password" in r.output
    r = cli("run", "--port", "1")
    assert r.exit_code == 1 and "invalid configuration" in r.output  # refused before serving
    monkeypatch.setenv("VISA_TEST_NO_SUCH_SECRET", "s3cret")
    assert cli("check-config").exit_code == 0

    monkeypatch.setenv("VISA_BASE_URL", "javascript:alert(1)")
    r = cli("check-config")
    assert r.exit_code == 1 and "base_url" in r.output


def test_bad_settings_file_is_named(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "visa.toml"
    bad.write_text("port = 'eighty'\n")
    monkeypatch.setenv("VISA_CONFIG", str(bad))
    r = cli("check-config")
    assert r.exit_code != 0 and "port" in r.output and "invalid configuration" in r.output


def test_the_production_example_is_valid(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISA_CONFIG", str(ROOT / "deploy/visa.example.toml"))
    monkeypatch.delenv("VISA_DATABASE_URL")
    from visa.settings import Settings

    settings = Settings()
    assert settings.database_url and settings.database_url.startswith("postgresql")
    assert settings.log_json and settings.session_cookie_secure and settings.oidc.server_url
    assert settings.user_content_origin("abc123") == "https://abc123.visa-content.example.org"


def test_the_user_content_domain_is_apart_from_visa() -> None:
    from pydantic import ValidationError

    from visa.settings import Settings

    embedded = Settings(base_url="http://127.0.0.1:8080")
    assert embedded.user_content_origin("abc123") == "http://abc123.instances.localhost:8080"
    assert Settings(user_content_domain="Lab.Example.NET:8443").content_domain == "lab.example.net:8443"
    for bad, base in (
        ("visa.example.org", "https://visa.example.org"),  # visa's own host
        ("example.org", "https://visa.example.org"),  # a parent: its cookies would reach visa
        ("https://x.example.net", "https://visa.example.org"),
        ("localhost", "https://visa.example.org"),  # one label
        ("x.example.net/path", "https://visa.example.org"),
    ):
        with pytest.raises(ValidationError, match="user_content_domain|domain name"):
            Settings(base_url=base, user_content_domain=bad)


def test_check_config_asks_for_a_user_content_domain_off_this_machine(tmp_path: Path) -> None:
    from visa.checks import check_settings
    from visa.settings import Settings

    def finding(**kw: str):
        found = check_settings(Settings(data_dir=tmp_path, **kw))
        return next(f for f in found if f.subject == "user_content_domain")

    assert finding(base_url="http://127.0.0.1:8080").level == "ok"
    assert finding(base_url="https://visa.example.org").level == "warning"
    chosen = finding(base_url="https://visa.example.org", user_content_domain="lab.example.net")
    assert chosen.level == "ok" and "lab.example.net" in chosen.message


def test_check_config_says_when_the_local_cloud_cannot_isolate(cli, tmp_path: Path) -> None:
    assert cli("init").exit_code == 0
    config = tmp_path / "cloud.json"
    config.write_text(json.dumps({"isolation": "none", "operator_usernames": ["op"]}))
    assert cli("clouds", "add", "bare", "--kind", "local", "--config", str(config)).exit_code == 0
    r = cli("check-config")
    assert r.exit_code == 0, r.output
    if os.geteuid() == 0:  # an unsandboxed session would run as root: nobody is served
        assert "warning cloud bare isolation: sessions are not isolated and visa runs as root: nobody" in r.output
    else:
        assert "warning cloud bare isolation: sessions are not isolated: only op is served" in r.output
    assert "isolation is off in the cloud's config" in r.output
    config.write_text(json.dumps({"uid_range": [0, 10]}))
    assert cli("clouds", "add", "typo", "--kind", "local", "--config", str(config)).exit_code == 0
    r = cli("check-config")
    assert r.exit_code == 1 and "cloud typo: local cloud config uid_range" in r.output


def test_check_config_warns_when_session_homes_share_the_databases_disk(cli, tmp_path: Path) -> None:
    """The embedded setup keeps homes beside visa.db: a session filling its home fills the database's disk."""
    assert cli("init").exit_code == 0
    r = cli("check-config")
    assert r.exit_code == 0, r.output
    assert "warning cloud local homes: " in r.output and "same file system as" in r.output
    assert "visa.db" in r.output or "data" in r.output
    # Homes on another file system (here /dev/shm, a tmpfs of its own): no warning.
    other = Path("/dev/shm")
    if other.is_dir() and other.stat().st_dev != tmp_path.stat().st_dev:
        config = tmp_path / "cloud.json"
        config.write_text(json.dumps({"root_dir": str(other / f"visa-homes-{os.getpid()}")}))
        assert cli("clouds", "add", "apart", "--kind", "local", "--config", str(config)).exit_code == 0
        r = cli("check-config")
        assert "cloud apart homes" not in r.output, r.output


def test_a_home_template_outside_its_root_is_named_with_its_file_and_field(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "visa.toml"
    bad.write_text('[provisioning]\nhome_mount_template = "nfs:/homes/{username}/../../etc"\n'
                   'home_mount_root = "nfs:/homes"\n')
    monkeypatch.setenv("VISA_CONFIG", str(bad))
    r = cli("check-config")
    assert r.exit_code != 0 and str(bad) in r.output and "home_mount_template" in r.output
    assert "outside home_mount_root" in r.output
    monkeypatch.delenv("VISA_CONFIG")

    assert cli("init").exit_code == 0
    config = tmp_path / "cloud.json"
    config.write_text(json.dumps({"provisioning": {"mount_type": "bind", "home_mount_template": "/srv/{username}/..",
                                                   "home_mount_root": "/srv"}}))
    r = cli("clouds", "add", "homes", "--kind", "local", "--config", str(config))
    assert r.exit_code == 1 and str(config) in r.output and "config.provisioning" in r.output
    assert "outside home_mount_root" in r.output
    assert "homes" not in cli("clouds", "list").output  # nothing registered
    config.write_text(json.dumps({"provisioning": {"mount_type": "bind", "home_mount_template": "/srv/{username}",
                                                   "home_mount_root": "/srv"}}))
    assert cli("clouds", "add", "homes", "--kind", "local", "--config", str(config)).exit_code == 0


def test_check_config_warns_when_the_host_answers_at_the_metadata_address(cli, committed_db) -> None:
    """On a host of the test's own (a network namespace) that serves 169.254.169.254:80. The
    namespace has no route to PostgreSQL: the whole check-config runs there on SQLite."""
    import os
    import shutil
    import socket
    import subprocess

    from tests.netns import run_in
    from visa.checks import metadata_service

    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("a network namespace of the test's own needs root and iproute2")
    whole = committed_db.url.startswith("sqlite")
    ns = "visa-t-metadata"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", ns, "addr", "add", "169.254.169.254/32", "dev", "lo"], check=True)
        assert cli("init").exit_code == 0
        assert run_in(ns, metadata_service, "metadata service") is None
        if whole:
            quiet = run_in(ns, cli, "check-config")
            assert quiet.exit_code == 0 and "169.254.169.254" not in quiet.output, quiet.output

        def serve() -> socket.socket:
            server = socket.socket()
            server.bind(("169.254.169.254", 80))
            server.listen(4)
            return server

        server = run_in(ns, serve)
        try:
            found = run_in(ns, metadata_service, "metadata service")
            r = run_in(ns, cli, "check-config") if whole else None
        finally:
            server.close()
        assert found is not None and found.level == "warning" and "169.254.169.254:80" in found.message
        if r is not None:
            assert r.exit_code == 0 and "warning metadata service: this host answers on 169.254.169.254:80" in r.output
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_check_config_reports_a_users_uid_inside_the_local_clouds_range(cli, tmp_path: Path) -> None:
    """visa gives its own accounts uids of the range: a facility uid there may be one of them."""
    assert cli("init").exit_code == 0
    config = tmp_path / "cloud.json"
    config.write_text(json.dumps({"uid_range": [250000, 250999]}))
    assert cli("clouds", "add", "ranged", "--kind", "local", "--config", str(config)).exit_code == 0
    assert cli("users", "add", "ines").exit_code == 0
    assert cli("users", "add", "olaf").exit_code == 0
    assert cli("users", "set-posix", "olaf", "--uid", "23456", "--gid", "23456").exit_code == 0
    assert "cloud ranged uid_range" not in cli("check-config").output
    assert cli("users", "set-posix", "ines", "--uid", "250007", "--gid", "23457").exit_code == 0
    r = cli("check-config")
    assert "warning cloud ranged uid_range: uid_number of ines inside 250000-250999" in r.output, r.output
    assert "olaf" not in r.output.split("uid_range:")[-1]


def test_check_config_says_why_the_providers_discovery_fails(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """An issuer nobody answers at, and one that answers a web page: each named, with its URL."""
    import http.server
    import threading

    from tests.processes import free_port

    assert cli("init").exit_code == 0
    nobody = f"http://127.0.0.1:{free_port()}/"
    monkeypatch.setenv("VISA_OIDC__ISSUER", nobody)
    r = cli("check-config")
    assert r.exit_code == 1, r.output
    assert (f"error   oidc discovery: the identity provider's discovery document at "
            f"{nobody}.well-known/openid-configuration is unreachable") in r.output

    class Portal(http.server.BaseHTTPRequestHandler):  # a sign-in portal's page where the issuer should be
        def do_GET(self) -> None:
            body = b"<!DOCTYPE html><title>Sign in</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Portal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        portal = f"http://127.0.0.1:{server.server_address[1]}/auth"
        monkeypatch.setenv("VISA_OIDC__ISSUER", portal)
        r = cli("check-config", "--json")
        assert r.exit_code == 1
        found = [f for f in json.loads(r.output)["findings"] if f["subject"] == "oidc discovery"]
        assert found == [{"level": "error", "subject": "oidc discovery", "message":
                          f"the identity provider's discovery document at {portal}/.well-known/openid-configuration "
                          "is not JSON (text/html)"}]
    finally:
        server.shutdown()
        server.server_close()
