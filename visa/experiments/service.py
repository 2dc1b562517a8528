"""Queries on experiments."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, contains_eager

from visa.actor import Actor
from visa.clock import Clock
from visa.experiments.models import Experiment, Instrument, Proposal, experiment_members
from visa.experiments.schemas import OpenDataQuery
from visa.policy import require


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
