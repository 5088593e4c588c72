"""Who runs a job: claims, heartbeats, the final status, and what the sweeper looks for.

Every status change here is one guarded UPDATE, so two workers (or a worker and the
sweeper) racing on one job cannot both win. Leases are written and judged with the
database server's clock, never a host's: a worker or sweeper whose clock is off cannot
take a healthy job or keep a dead one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from shared.errors import InvalidTransition, LeaseLost
from shared.models import FINAL_STATUSES, Job, JobStatus
from shared.repository.jobs import add_event, database_now


def claim_job(
    *, session: Session, job_id: uuid.UUID, worker: str, lease_seconds: int, max_attempts: int
) -> Job | None:
    """Atomically move a queued (or lease-expired running) job to running for this worker.

    Returns None when another worker holds a live lease or the job is already final, so a
    redelivered message never trains the same job twice at once.
    """
    now = database_now(session)
    claimable = or_(
        Job.status == JobStatus.QUEUED,
        and_(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now),
    )
    # One statement: the guarded UPDATE returns the claimed row (RETURNING works on
    # PostgreSQL and SQLite >= 3.35), no second read.
    job = session.scalars(
        update(Job)
        .where(Job.id == job_id, claimable, Job.cancel_requested.is_(False))
        .where(Job.attempt < max_attempts)
        .values(
            status=JobStatus.RUNNING,
            worker=worker,
            attempt=Job.attempt + 1,
            heartbeat_at=now,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=func.coalesce(Job.started_at, now),
        )
        .returning(Job),
        execution_options={"populate_existing": True, "synchronize_session": False},
    ).one_or_none()
    if job is None:
        return None
    add_event(
        session=session,
        job_id=job_id,
        kind="claimed",
        message=f"claimed by {worker} (attempt {job.attempt})",
    )
    return job


@dataclass(frozen=True, slots=True)
class Requests:
    """What the users asked of a running job, as its heartbeat reads them."""

    cancel: bool  # stop for good (cancelled)
    preempt: bool  # checkpoint and go back to the queue, to resume later


def heartbeat(
    *,
    session: Session,
    job_id: uuid.UUID,
    worker: str,
    lease_seconds: int,
    step: int,
    total: int | None,
    epoch: int,
) -> Requests:
    """Extend the lease and store progress; returns the cancel and preempt requests.

    Raises LeaseLost when this worker no longer holds the job (its lease expired and
    another worker claimed it, or the sweeper ended it): the caller must stop training.
    """
    now = database_now(session)
    row = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == JobStatus.RUNNING)
        .values(
            heartbeat_at=now,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            progress_step=step,
            progress_total=total,
            progress_epoch=epoch,
        )
        .returning(Job.cancel_requested, Job.preempt_requested)
    ).one_or_none()
    if row is None:
        raise LeaseLost(f"job {job_id} is no longer held by {worker}")
    return Requests(cancel=bool(row.cancel_requested), preempt=bool(row.preempt_requested))


def requeue_job(*, session: Session, job_id: uuid.UUID, worker: str, reason: str) -> None:
    """running -> queued by the worker holding it, after its resumable checkpoint: a
    preemption or a shutdown is not a crash, so the attempt it used is given back."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == JobStatus.RUNNING)
        .values(
            status=JobStatus.QUEUED,
            worker=None,
            lease_expires_at=None,
            attempt=Job.attempt - 1,
            preempt_requested=False,
            enqueued_at=None,  # not sent yet: the sweeper re-sends it if the send fails
        )
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise InvalidTransition(f"job {job_id} is not running on {worker}")
    add_event(session=session, job_id=job_id, kind="requeued", message=reason)


def finish_job(
    *,
    session: Session,
    job_id: uuid.UUID,
    worker: str,
    status: JobStatus,
    summary: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    """running -> succeeded / failed / cancelled, only by the worker holding the claim."""
    if status not in FINAL_STATUSES:
        raise InvalidTransition(f"{status} is not a final status")
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == JobStatus.RUNNING)
        .values(status=status, summary=summary, error=error, finished_at=database_now(session))
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise InvalidTransition(f"job {job_id} is not running on {worker}")
    add_event(session=session, job_id=job_id, kind=str(status), message=error or "")


def jobs_to_resend(*, session: Session, older_than: timedelta, max_attempts: int) -> list[Job]:
    """Jobs whose message may be lost: the sweeper sends "work on job X" again.

    That is queued jobs whose message went out long ago (or never), and running jobs
    whose worker stopped heartbeating while attempts are left: re-sent once right after
    the lease runs out, then again every `older_than` while nobody claims them.
    """
    now = database_now(session)
    cutoff = now - older_than
    stale_queued = and_(
        Job.status == JobStatus.QUEUED,
        or_(Job.enqueued_at.is_(None), Job.enqueued_at < cutoff),
        Job.created_at < cutoff,
    )
    lost_running = and_(
        Job.status == JobStatus.RUNNING,
        Job.lease_expires_at < now,
        Job.attempt < max_attempts,
        Job.cancel_requested.is_(False),
        or_(
            Job.enqueued_at.is_(None),
            Job.enqueued_at < Job.lease_expires_at,
            Job.enqueued_at < cutoff,
        ),
    )
    return list(session.scalars(select(Job).where(or_(stale_queued, lost_running))))


def end_abandoned_jobs(*, session: Session, max_attempts: int) -> dict[str, int]:
    """Running jobs whose lease ran out and that nobody may claim again get a final status.

    A cancel request makes them cancelled; having used every attempt makes them failed.
    Each is one guarded UPDATE on the expired lease, so a job that just heartbeated stays.
    """
    now = database_now(session)
    expired = and_(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
    outcomes = (
        (JobStatus.CANCELLED, Job.cancel_requested.is_(True), "cancelled; its worker was gone"),
        (
            JobStatus.FAILED,
            Job.attempt >= max_attempts,
            f"worker lost {max_attempts} times (no heartbeat); giving up",
        ),
    )
    counts: dict[str, int] = {}
    for status, condition, message in outcomes:
        ids = session.scalars(
            update(Job)
            .where(expired, condition)
            .values(
                status=status, finished_at=now, error=None if status == "cancelled" else message
            )
            .returning(Job.id)
        ).all()
        for job_id in ids:
            add_event(session=session, job_id=job_id, kind=str(status), message=message)
        counts[str(status)] = len(ids)
    return counts
