"""Queries on experiments."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from visa.actor import Actor
from visa.experiments.models import Experiment, experiment_members


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
