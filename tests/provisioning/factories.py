"""Rows for provisioning tests, built directly with the models."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from visa.catalogue.models import Flavour, Image, ImageProtocol, Plan, Protocol
from visa.clouds.models import Cloud
from visa.experiments.models import Experiment, Instrument, Proposal
from visa.instances.models import Instance, InstanceState
from visa.instances.spec import boot_spec
from visa.provisioning.spec import BootSpec
from visa.users.models import User

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SECRET = "Zq8sW3cretVnc-token_4242"
_seq = itertools.count(1)


def make_user(session: Session, username: str = "alice", **kwargs: Any) -> User:
    defaults: dict[str, Any] = {"full_name": username.title(), "created_at": NOW}
    user = User(username=username, **{**defaults, **kwargs})
    session.add(user)
    session.flush()
    return user


def make_image(
    session: Session,
    name: str = "desktop",
    protocols: list[dict[str, Any]] | None = None,
    options: dict[str, Any] | None = None,
) -> Image:
    image = Image(
        name=name,
        environment=name.title(),
        version="1",
        cloud_image_ref=f"visa-{name}",
        options=options or {},
    )
    for p in protocols if protocols is not None else [{"protocol": "VNC", "port": 5901}]:
        image.protocols.append(
            ImageProtocol(protocol=Protocol(p["protocol"]), port=p["port"], optional=p.get("optional", False))
        )
    session.add(image)
    session.flush()
    return image


def make_plan(session: Session, image: Image) -> Plan:
    flavour = Flavour(name=f"f{next(_seq)}", cores=2, memory_mb=4096, cloud_flavour_ref="m1.medium")
    plan = Plan(image=image, flavour=flavour)
    session.add(plan)
    session.flush()
    return plan


def make_cloud(session: Session) -> Cloud:
    cloud = Cloud(name=f"cloud{next(_seq)}", kind="local", config={}, created_at=NOW)
    session.add(cloud)
    session.flush()
    return cloud


def _instrument(session: Session, name: str) -> Instrument:
    found = session.query(Instrument).filter_by(name=name).one_or_none()
    if found is None:
        found = Instrument(name=name)
        session.add(found)
    return found


def make_experiment(
    session: Session,
    proposal: str = "ev280",
    beamline: str = "id21",
    members: list[User] = (),  # type: ignore[assignment]
    public_at: datetime | None = None,
) -> Experiment:
    prop = session.query(Proposal).filter_by(identifier=proposal).one_or_none()
    if prop is None:
        prop = Proposal(identifier=proposal, title=f"Proposal {proposal}", public_at=public_at)
        session.add(prop)
    experiment = Experiment(
        external_id=f"{proposal}-{beamline}-{next(_seq)}",
        proposal=prop,
        instrument=_instrument(session, beamline),
        start_date=date(2023, 10, 25),
        end_date=date(2023, 10, 28),
        members=list(members),
    )
    session.add(experiment)
    session.flush()
    return experiment


def make_instance(
    session: Session,
    owner: User,
    image: Image,
    experiments: list[Experiment] = (),  # type: ignore[assignment]
    **kwargs: Any,
) -> Instance:
    n = next(_seq)
    values: dict[str, Any] = {
        "uid": f"i{n:07d}",
        "name": f"machine {n}",
        "owner": owner,
        "plan": make_plan(session, image),
        "cloud": make_cloud(session),
        "state": InstanceState.BUILDING,
        "secret": SECRET,
        "created_at": NOW,
        "terminates_at": NOW + timedelta(days=14),
        "experiments": list(experiments),
    }
    instance = Instance(**{**values, **kwargs})
    session.add(instance)
    session.flush()
    return instance


def boot(instance: Instance, open_data: list[Experiment | Proposal] = ()) -> BootSpec:  # type: ignore[assignment]
    """What provisioning renders the instance from, as the executor builds it."""
    return boot_spec(instance, now=NOW, open_data=open_data)
