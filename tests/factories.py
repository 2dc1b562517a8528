"""Factories for tests: users with roles, experiments, a catalogue and a cloud."""

from __future__ import annotations

import hashlib
import itertools
from datetime import date, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from visa.actor import Actor, actor_for
from visa.catalogue.models import Flavour, FlavourLifetime, FlavourLimit, Image, ImageProtocol, Plan, Protocol
from visa.clock import Clock
from visa.clouds.models import Cloud
from visa.db import Base, Database
from visa.experiments.models import Experiment, Instrument, Proposal
from visa.users.models import Role, RoleGrant, User

_seq = itertools.count(1)


def make_user(session: Session, clock: Clock, username: str | None = None, *, roles: tuple[Role, ...] = (),
              quota: int = 2, password: str | None = None, **kw: Any) -> User:
    from werkzeug.security import generate_password_hash

    username = username or f"user{next(_seq)}"
    # Like the facility's directory, every user has a unix identity unless a test says otherwise
    # (uid_number=None): machines with data on shared storage need one. Derived from the name,
    # so a local cloud's unix account made in one run has the same uid in the next.
    uid = 3_000_000 + int(hashlib.sha256(username.encode()).hexdigest()[:8], 16) % 1_000_000
    kw.setdefault("uid_number", uid)
    kw.setdefault("gid_number", uid)
    user = User(
        username=username, full_name=kw.pop("full_name", "Test User"),
        email=kw.pop("email", None), instance_quota=quota, active=True, created_at=clock.now(),
        password_hash=generate_password_hash(password) if password else None, **kw,
    )
    for role in roles:
        user.grants.append(RoleGrant(role=role, granted_at=clock.now()))
    session.add(user)
    session.flush()
    return user


def actor(user: User, clock: Clock) -> Actor:
    return actor_for(user, clock.now())


def make_instrument(session: Session, name: str) -> Instrument:
    from sqlalchemy import select

    inst = session.scalar(select(Instrument).where(Instrument.name == name))
    if inst is None:
        inst = Instrument(name=name)
        session.add(inst)
        session.flush()
    return inst


def make_experiment(session: Session, *, members: list[User], instrument: str = "id21", proposal: str | None = None,
                    start: date | None = None, public_at=None) -> Experiment:
    proposal_id = proposal or f"ev{next(_seq)}"
    prop = Proposal(identifier=proposal_id, title=f"Proposal {proposal_id}", public_at=public_at)
    start = start or date(2026, 1, 5)
    exp = Experiment(
        external_id=f"{proposal_id}-{instrument}-{next(_seq)}", proposal=prop,
        instrument=make_instrument(session, instrument), start_date=start, end_date=start + timedelta(days=3),
        members=members,
    )
    session.add(exp)
    session.flush()
    return exp


def make_cloud(session: Session, clock: Clock, name: str = "local", kind: str = "local") -> Cloud:
    cloud = Cloud(name=name, kind=kind, config={}, enabled=True, created_at=clock.now())
    session.add(cloud)
    session.flush()
    return cloud


def make_flavour(session: Session, name: str, cores: int = 4, memory_mb: int = 4096, *,
                 limit_roles: tuple[Role, ...] = (), limit_instruments: tuple[Instrument, ...] = (),
                 lifetimes: dict[Role | None, int] | None = None, gpu: str | None = None) -> Flavour:
    fl = Flavour(name=name, cores=cores, memory_mb=memory_mb, cloud_flavour_ref=name, gpu_kind=gpu,
                 gpu_count=1 if gpu else 0, visible=True)
    fl.limits = [FlavourLimit(role=r) for r in limit_roles] + [FlavourLimit(instrument=i) for i in limit_instruments]
    fl.lifetimes = [FlavourLifetime(role=r, lifetime_hours=h) for r, h in (lifetimes or {}).items()]
    session.add(fl)
    session.flush()
    return fl


def make_image(session: Session, name: str = "desktop", protocols: dict[Protocol, int] | None = None) -> Image:
    img = Image(name=name, environment=name.title(), version="1", cloud_image_ref=name, visible=True, options={})
    for proto, port in (protocols or {Protocol.VNC: 5901}).items():
        img.protocols.append(ImageProtocol(protocol=proto, port=port))
    session.add(img)
    session.flush()
    return img


def make_plan(session: Session, image: Image, flavour: Flavour, preset: bool = False) -> Plan:
    plan = Plan(image=image, flavour=flavour, preset=preset, enabled=True)
    session.add(plan)
    session.flush()
    return plan


def make_catalogue(session: Session) -> tuple[Plan, Plan]:
    """A preset plan on a medium flavour, and a GPU plan limited to scientific computing or
    instrument id16a (a week, a month for staff)."""
    id16a = make_instrument(session, "id16a")
    desktop = make_image(session)
    medium = make_flavour(session, "esrf.medium")
    gpu = make_flavour(session, "esrf.gpu.a40", 16, 32768, gpu="NVIDIA A40",
                       limit_roles=(Role.SCIENTIFIC_COMPUTING,), limit_instruments=(id16a,),
                       lifetimes={None: 168, Role.STAFF: 720})
    return make_plan(session, desktop, medium, preset=True), make_plan(session, desktop, gpu)


def empty_database(database: Database) -> None:
    """Empty every table, ids restarted on PostgreSQL: what the committed database gets after each
    test. Through the database's own sessions, so inside a rolled-back test it empties the
    tables only for the rest of that test."""
    with database.unit_of_work() as s:
        if s.get_bind().dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            s.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(Base.metadata.sorted_tables):
                s.execute(table.delete())
