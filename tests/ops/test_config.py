"""`visa check-config` and the same checks before `visa run`: clear findings, exit status 2 on errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_check_config_reports_and_fails_on_errors(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    assert cli("init").exit_code == 0
    r = cli("check-config")
    assert r.exit_code == 0, r.output
    assert "ok      database" in r.output and "ok      cloud local: local" in r.output
    # What the local cloud enforces on this machine is said either way.
    assert "cloud local isolation: sessions " in r.output

    config = tmp_path / "cloud.json"
    config.write_text(json.dumps({"provisioning": {"auth": {"password": {"env": "VISA_TEST_NO_SUCH_SECRET"}}}}))
    assert cli("clouds", "add", "remote", "--kind", "local", "--config", str(config)).exit_code == 0
    r = cli("check-config")
    assert r.exit_code == 2 and "cloud remote: secrets not in the environment: provisioning.auth.password" in r.output
    r = cli("run", "--port", "1")
    assert r.exit_code == 1 and "invalid configuration" in r.output  # refused before serving
    monkeypatch.setenv("VISA_TEST_NO_SUCH_SECRET", "s3cret")
    assert cli("check-config").exit_code == 0

    monkeypatch.setenv("VISA_BASE_URL", "javascript:alert(1)")
    r = cli("check-config")
    assert r.exit_code == 2 and "base_url" in r.output


def test_bad_settings_file_is_named(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    bad = tmp_path / "visa.toml"
    bad.write_text("port = 'eighty'\n")
    monkeypatch.setenv("VISA_CONFIG", str(bad))
    r = cli("check-config")
    assert r.exit_code != 0 and "port" in r.output and "invalid configuration" in r.output


def test_the_production_example_is_valid(cli, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("VISA_CONFIG", str(ROOT / "deploy/visa.example.toml"))
    monkeypatch.delenv("VISA_DATABASE_URL")
    from visa.settings import Settings

    settings = Settings()
    assert settings.database_url and settings.database_url.startswith("postgresql")
    assert settings.log_json and settings.session_cookie_secure and settings.oidc.server_url


def test_check_config_says_when_the_local_cloud_cannot_isolate(cli, tmp_path: Path) -> None:  # noqa: ANN001
    assert cli("init").exit_code == 0
    config = tmp_path / "cloud.json"
    config.write_text(json.dumps({"isolation": "none", "operator_usernames": ["op"]}))
    assert cli("clouds", "add", "bare", "--kind", "local", "--config", str(config)).exit_code == 0
    r = cli("check-config")
    assert r.exit_code == 0, r.output
    assert "warning cloud bare isolation: sessions are not isolated: only op is served" in r.output
    assert "isolation is off in the cloud's config" in r.output
    config.write_text(json.dumps({"uid_range": [0, 10]}))
    assert cli("clouds", "add", "typo", "--kind", "local", "--config", str(config)).exit_code == 0
    r = cli("check-config")
    assert r.exit_code == 2 and "cloud typo: local cloud config uid_range" in r.output
