"""visa's state is its own: the data directory is 0700, ``visa.db`` and ``secret_key`` are
created 0600 at once (never readable by others, even for an instant)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from visa.settings import Settings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def no_chmod(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files made private only by a chmod after creation were readable in between: refuse it."""

    def refuse(*_args: object, **_kw: object) -> None:
        raise AssertionError("made readable first, then chmod-ed: a window where others could read it")

    monkeypatch.setattr(os, "chmod", refuse)
    monkeypatch.setattr(os, "fchmod", refuse)
    monkeypatch.setattr(Path, "chmod", refuse)
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_new_data_directory_and_its_files_are_private_from_the_start(tmp_path: Path, no_chmod: None) -> None:
    from visa.db import Database
    from visa.migrate import upgrade

    settings = Settings(data_dir=tmp_path / "var" / "data")
    settings.private_data_dir()
    database = Database(settings.sqlalchemy_url)
    upgrade(database.engine)
    key = settings.resolved_secret_key()
    assert len(key) > 40 and settings.resolved_secret_key() == key
    data = settings.data_dir
    assert _mode(data) == 0o700
    assert _mode(data / "secret_key") == 0o600
    assert _mode(data / "visa.db") == 0o600
    for extra in data.glob("visa.db-*"):  # WAL and shared memory take the database file's mode
        assert _mode(extra) & 0o077 == 0, extra
    database.dispose()


def test_the_app_makes_a_private_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VISA_DATABASE_URL", raising=False)
    monkeypatch.delenv("VISA_SECRET_KEY", raising=False)
    from visa.web.app import create_app

    data = tmp_path / "fresh"
    settings = Settings(data_dir=data)
    create_app(settings, check_schema=False)
    assert _mode(data) == 0o700 and _mode(data / "secret_key") == 0o600 and _mode(data / "visa.db") == 0o600


def test_an_older_readable_data_directory_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "secret_key").write_text("an-old-key-made-by-an-older-version")
    (data / "secret_key").chmod(0o644)
    data.chmod(0o755)
    settings = Settings(data_dir=data)
    assert settings.resolved_secret_key() == "an-old-key-made-by-an-older-version"
    assert _mode(data) == 0o700 and _mode(data / "secret_key") == 0o600
