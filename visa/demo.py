"""A demonstration on one machine: the repository's catalogue, sample experiments with data on
disk, and local accounts. Idempotent: running it again changes nothing that exists."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from visa.actor import SYSTEM
from visa.catalogue.service import apply_files
from visa.clock import system_clock
from visa.db import Database
from visa.experiments.importer import import_experiments, parse_file
from visa.settings import Settings
from visa.users import service as users
from visa.users.models import Role, User

ROOT = Path(__file__).resolve().parent.parent
# An installed wheel has no repository around it: its build copied the demo's files here.
PACKAGED = Path(__file__).resolve().parent / "demo_data"
DEMO_USERS = [
    # username, password, roles
    ("admin", "admin-password", (Role.ADMIN, Role.STAFF)),
    ("scientist", "scientist-password", ()),
    ("colleague", "colleague-password", ()),
]


def _facility_data(settings: Settings, experiments_file: Path) -> None:
    """Sample raw data on disk where the local cloud binds it from."""
    facility = settings.data_dir / "facility"
    for record in json.loads(experiments_file.read_text())["experiments"]:
        raw = facility / "visitor" / record["proposal"] / record["instrument"]
        (facility / "processed" / record["proposal"] / record["instrument"]).mkdir(parents=True, exist_ok=True)
        raw.mkdir(parents=True, exist_ok=True)
        sample = raw / "README.txt"
        if not sample.exists():
            sample.write_text(f"Raw data of experiment {record['id']} ({record.get('proposal_title', '')})\n")


def prepare_demo(settings: Settings, database: Database) -> list[str]:
    out: list[str] = []
    if (ROOT / "deploy" / "demo" / "experiments.json").is_file():  # a source checkout
        catalogue = [ROOT / "flavours", ROOT / "images"]
        experiments_file = ROOT / "deploy" / "demo" / "experiments.json"
    else:
        catalogue = [PACKAGED / "flavours", PACKAGED / "images"]
        experiments_file = PACKAGED / "experiments.json"
    with database.unit_of_work() as s:
        diff = apply_files(SYSTEM, s, system_clock, catalogue)
    out.append(f"catalogue: {len(diff.changes)} change(s)")
    with database.unit_of_work() as s:
        result = import_experiments(SYSTEM, s, system_clock, parse_file(experiments_file),
                                    default_quota=settings.default_quota, limits=settings.posix)
    out.append(f"experiments: {result}")
    with database.unit_of_work() as s:
        for username, password, roles in DEMO_USERS:
            user = s.scalar(select(User).where(User.username == username))
            if user is None:
                user = users.create_user(
                    SYSTEM, s, system_clock, username=username, full_name=username.title(),
                    default_quota=settings.default_quota,
                    reserved=users.reserved_usernames(settings.provisioning.probe_username),
                )
            if user.password_hash is None:
                users.set_password(SYSTEM, s, system_clock, user, password)
            for role in roles:
                if role not in user.roles_at(system_clock.now()):
                    users.grant_role(SYSTEM, s, system_clock, user, role)
    _facility_data(settings, experiments_file)
    out.append(_local_cloud_for_demo(settings, database))
    out.append("demo accounts: " + ", ".join(f"{u} / {p}" for u, p, _ in DEMO_USERS))
    out.append(f"open http://{settings.host}:{settings.port}/")
    return out


def _local_cloud_for_demo(settings: Settings, database: Database) -> str:
    """Where the local cloud cannot isolate sessions it serves only its operator: in the
    demo that is ``scientist``, the account the README logs in with."""
    from visa.clouds.local import LocalProvider
    from visa.clouds.models import Cloud

    with database.unit_of_work() as s:
        cloud = s.scalar(select(Cloud).where(Cloud.name == "local", Cloud.kind == "local"))
        if cloud is None:
            return "local cloud: not registered"
        provider = LocalProvider.configured(cloud.name, cloud.config, settings)
        if provider.isolation_report().mode == "none" and "operator_usernames" not in cloud.config:
            cloud.config = {**cloud.config, "operator_usernames": ["scientist"]}
            provider = LocalProvider.configured(cloud.name, cloud.config, settings)
        return f"local cloud: {provider.isolation_report().summary()}"
