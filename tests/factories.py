"""Factories for tests: users with roles, experiments, a catalogue and a cloud."""

from __future__ import annotations

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

    user = User(
        username=username or f"user{next(_seq)}", full_name=kw.pop("full_name", "Test User"),
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
                    start: date | None = None, public_at=None) -> Experiment:  # noqa: ANN001
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


def empty_database(database: Database) -> None:
    """Empty every table, ids restarted on PostgreSQL: what the db fixture does after each test."""
    with database.engine.begin() as conn:
        if database.engine.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
