"""A configured cloud's provider: the class by kind, and the defaults the class takes from visa's settings."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from tests.factories import make_cloud
from visa.clock import FrozenClock
from visa.clouds.local import LocalProvider
from visa.clouds.models import Cloud
from visa.clouds.registry import make_provider
from visa.db import Database
from visa.services import Services
from visa.settings import Settings


def test_the_local_cloud_keeps_its_sessions_under_visas_data_dir(db: Database, clock: FrozenClock,
                                                                  tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    with db.unit_of_work() as s:
        make_cloud(s, clock, "local")
        make_cloud(s, clock, "named")
        s.scalar(select(Cloud).where(Cloud.name == "named")).config = {"root_dir": str(elsewhere)}
    settings = Settings(data_dir=tmp_path / "data", database_url=db.url, secret_key="k")
    services = Services(settings=settings, database=db, clock=clock)

    local = services.provider("local")
    assert isinstance(local, LocalProvider)
    assert local.root == (tmp_path / "data" / "local-instances").resolve()
    assert services.provider("named").root == elsewhere.resolve()  # type: ignore[attr-defined]
    # The stored config is left as it was: the default is the provider's, not the cloud's row.
    with db.sessionmaker() as s:
        assert s.scalar(select(Cloud).where(Cloud.name == "local")).config == {}
    # Made without settings (a plain make_provider), the config alone decides.
    assert make_provider("local", "x", {"root_dir": str(elsewhere)}).root == elsewhere.resolve()  # type: ignore[attr-defined]
