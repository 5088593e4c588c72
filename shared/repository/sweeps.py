"""Sweep rows: create, read, list, lock for a controller pass, cancel; their trials."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from shared.errors import InvalidTransition, NotFound
from shared.models import Sweep, SweepStatus, SweepTrial, utcnow
from shared.repository.jobs import database_now


class SweepNotFound(NotFound):
    """No such sweep (or not the caller's)."""


def create_sweep(
    *, session: Session, owner: str, name: str, spec: dict[str, Any], priority: int
) -> Sweep:
    """Insert a running sweep (its study is made by the controller's first pass)."""
    sweep_id = uuid.uuid4()
    sweep = Sweep(
        id=sweep_id, owner=owner, name=name, spec=spec, priority=priority,
        study_name=f"sweep-{sweep_id}", status=SweepStatus.RUNNING, cancel_requested=False,
        created_at=utcnow(),
    )  # fmt: skip
    session.add(sweep)
    session.flush()
    return sweep


def get_sweep(*, session: Session, sweep_id: uuid.UUID, owner: str | None = None) -> Sweep:
    """The sweep, if it exists and (when owner is given) belongs to that owner."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None or (owner is not None and sweep.owner != owner):
        raise SweepNotFound(f"sweep {sweep_id} not found")
    return sweep


def list_sweeps(*, session: Session, owner: str, limit: int = 50) -> list[Sweep]:
    """The owner's sweeps, newest first."""
    query = (
        select(Sweep)
        .where(Sweep.owner == owner)
        .order_by(Sweep.created_at.desc(), Sweep.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))


def lock_sweep(*, session: Session, sweep_id: uuid.UUID) -> Sweep | None:
    """The sweep row, locked until the transaction ends (PostgreSQL), so two controller
    passes over one sweep run one after the other; stamps the pass."""
    sweep = session.scalars(
        select(Sweep).where(Sweep.id == sweep_id).with_for_update()
    ).one_or_none()
    if sweep is not None:
        sweep.ticked_at = database_now(session)  # the sweeper judges with the same clock
    return sweep


def sweep_trials(*, session: Session, sweep_id: uuid.UUID) -> list[SweepTrial]:
    """The sweep's trials by number."""
    query = select(SweepTrial).where(SweepTrial.sweep_id == sweep_id).order_by(SweepTrial.number)
    return list(session.scalars(query))


def trials_of_sweeps(
    *, session: Session, sweep_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[SweepTrial]]:
    """The trials of several sweeps in one query, by sweep, in trial order."""
    found: dict[uuid.UUID, list[SweepTrial]] = {}
    if not sweep_ids:
        return found
    query = (
        select(SweepTrial)
        .where(SweepTrial.sweep_id.in_(sweep_ids))
        .order_by(SweepTrial.sweep_id, SweepTrial.number)
    )
    for trial in session.scalars(query):
        found.setdefault(trial.sweep_id, []).append(trial)
    return found


def trial_of_job(*, session: Session, job_id: uuid.UUID) -> SweepTrial | None:
    """The trial a job runs, if any."""
    return session.scalars(select(SweepTrial).where(SweepTrial.job_id == job_id)).first()


def request_sweep_cancel(*, session: Session, sweep_id: uuid.UUID) -> None:
    """Flag a running sweep; its controller cancels the running trials on its next pass."""
    result = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.status == SweepStatus.RUNNING)
        .values(cancel_requested=True)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise InvalidTransition(f"sweep {sweep_id} has already ended")


def sweeps_to_tick(*, session: Session, older_than: timedelta) -> list[uuid.UUID]:
    """Running sweeps whose controller has not passed for `older_than` (a lost message,
    a controller restart): the sweeper sends them another pass. Rows a pass holds locked
    are skipped: that pass is the one they need."""
    cutoff = database_now(session) - older_than
    query = (
        select(Sweep.id)
        .where(
            and_(
                Sweep.status == SweepStatus.RUNNING,
                or_(Sweep.ticked_at.is_(None), Sweep.ticked_at < cutoff),
            )
        )
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(query))


def mark_sweep_asked(*, session: Session, sweep_id: uuid.UUID) -> None:
    """A pass was asked for: the sweeper asks again only a period later."""
    session.execute(
        update(Sweep).where(Sweep.id == sweep_id).values(ticked_at=database_now(session))
    )
