"""Queries on experiments."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, contains_eager, selectinload

from visa.actor import Actor
from visa.audit.service import record
from visa.clock import Clock
from visa.errors import NotFound
from visa.experiments.importer import ensure_scientist_role
from visa.experiments.models import Experiment, Instrument, Proposal, experiment_members
from visa.experiments.schemas import OpenDataQuery
from visa.policy import require
from visa.users.service import get_user


def experiments_of(actor: Actor, session: Session) -> list[Experiment]:
    """The experiments the actor is a member of, newest first."""
    if actor.user is None:
        return []
    return list(
        session.scalars(
            select(Experiment)
            .join(experiment_members, experiment_members.c.experiment_id == Experiment.id)
            .where(experiment_members.c.user_id == actor.user.id)
            .order_by(Experiment.start_date.desc(), Experiment.id.desc())
        )
    )


def search_open_data(actor: Actor, session: Session, clock: Clock, query: OpenDataQuery) -> list[Experiment]:
    """Experiments of any proposal whose embargo has ended, most recently opened first."""
    require(actor, "search_open_data")
    stmt = (
        select(Experiment)
        .join(Experiment.proposal)
        .join(Experiment.instrument)
        .options(contains_eager(Experiment.proposal), contains_eager(Experiment.instrument))
        .where(Proposal.public_at.is_not(None), Proposal.public_at <= clock.now())
    )
    if query.q:
        stmt = stmt.where(or_(
            *(c.icontains(query.q, autoescape=True)
              for c in (Proposal.identifier, Proposal.title, Experiment.external_id, Experiment.title, Instrument.name))
        ))
    if query.instrument:
        stmt = stmt.where(Instrument.name == query.instrument)
    stmt = stmt.order_by(Proposal.public_at.desc(), Experiment.start_date.desc(), Experiment.id.desc())
    return list(session.scalars(stmt.limit(query.limit)))


def list_instruments(actor: Actor, session: Session) -> list[Instrument]:
    """Every instrument with its scientists, by name."""
    require(actor, "manage_instruments")
    return list(session.scalars(select(Instrument).options(selectinload(Instrument.scientists)).order_by(Instrument.name)))


def get_instrument(session: Session, name: str) -> Instrument:
    inst = session.scalar(select(Instrument).where(Instrument.name == name))
    if inst is None:
        raise NotFound(f"no instrument {name[:64]!r} (instruments come from the experiments import)",
                       field="instrument")
    return inst


def add_scientist(actor: Actor, session: Session, clock: Clock, instrument: str, username: str) -> bool:
    """Make a user a scientist of an instrument (and INSTRUMENT_SCIENTIST, which the support rule
    asks for); False when they were one already. A scheduled import that states this instrument's
    scientists sets them again as the user office says."""
    require(actor, "manage_instruments")
    inst, user = get_instrument(session, instrument), get_user(session, username)
    if user in inst.scientists:
        return False
    inst.scientists.append(user)
    session.flush()
    granted = ensure_scientist_role(actor, session, clock, user)
    record(actor, session, clock, "instrument.scientist.add", target_type="instrument", target_id=inst.id,
           instrument=inst.name, username=user.username, role_granted=granted)
    return True


def remove_scientist(actor: Actor, session: Session, clock: Clock, instrument: str, username: str) -> bool:
    """No longer a scientist of the instrument (the role stays: alone, it shows no instrument's
    machines); False when they were not one."""
    require(actor, "manage_instruments")
    inst, user = get_instrument(session, instrument), get_user(session, username)
    if user not in inst.scientists:
        return False
    inst.scientists.remove(user)
    session.flush()
    record(actor, session, clock, "instrument.scientist.remove", target_type="instrument", target_id=inst.id,
           instrument=inst.name, username=user.username)
    return True
