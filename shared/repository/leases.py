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
from sqlalchemy.orm import Session, aliased

from shared.errors import InvalidTransition, LeaseLost
from shared.models import FINAL_STATUSES, Job, JobStatus
from shared.repository.gangs import NO_GANG
from shared.repository.jobs import add_event, database_now


def claim_job(
    *, session: Session, job_id: uuid.UUID, worker: str, lease_seconds: int, max_attempts: int
) -> Job | None:
    """Atomically move a queued job to running for this worker.

    Returns None when the job is running (on another worker, or on a dead one whose job
    only the sweeper puts back in the queue: requeue_lost_jobs), final or cancelled, so a
    redelivered message never trains the same job twice at once.
    """
    now = database_now(session)
    # One statement: the guarded UPDATE returns the claimed row (RETURNING works on
    # PostgreSQL and SQLite >= 3.35), no second read.
    job = session.scalars(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False))
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


def claim_next(
    *,
    session: Session,
    queue: str,
    worker: str,
    lease_seconds: int,
    max_attempts: int,
    max_running_per_owner: int | None = None,
) -> Job | None:
    """Claim the queued job of `queue` that a free worker should run next; None if none.

    The order: the highest priority; within it the owner with the fewest running jobs,
    then the owner whose last job started longest ago (so one owner's backlog of 1,000
    jobs does not hold back another owner's first job), then the oldest job. Owners at
    `max_running_per_owner` wait. On PostgreSQL the pick locks its row (SKIP LOCKED), so
    two workers picking at once take two different jobs.
    """
    other = aliased(Job)
    running = (
        select(func.count())
        .select_from(other)
        .where(other.owner == Job.owner, other.status == JobStatus.RUNNING)
        .correlate(Job)
        .scalar_subquery()
    )
    last_start = (
        select(func.max(other.started_at)).where(other.owner == Job.owner).correlate(Job)
    ).scalar_subquery()
    pick = select(Job.id).where(
        Job.queue == queue,
        Job.status == JobStatus.QUEUED,
        Job.cancel_requested.is_(False),
        Job.attempt < max_attempts,
        or_(Job.not_before.is_(None), Job.not_before <= database_now(session)),
    )
    if max_running_per_owner:
        pick = pick.where(running < max_running_per_owner)
    pick = pick.order_by(
        Job.priority.desc(), running, last_start.asc().nulls_first(), Job.created_at, Job.id
    ).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        pick = pick.with_for_update(of=Job, skip_locked=True)
    for _ in range(3):  # SQLite: another worker may claim the same pick first
        job_id = session.scalar(pick)
        if job_id is None:
            return None
        job = claim_job(
            session=session,
            job_id=job_id,
            worker=worker,
            lease_seconds=lease_seconds,
            max_attempts=max_attempts,
        )
        if job is not None:
            return job
    return None


def claim_for_message(
    *,
    session: Session,
    job_id: uuid.UUID,
    worker: str,
    lease_seconds: int,
    max_attempts: int,
    max_running_per_owner: int | None = None,
) -> Job | None:
    """The training job a worker runs for the message "work on job X", claimed.

    A message is a turn at X's queue: the worker runs the job the claim order puts first
    there (claim_next; often X itself), so priorities and fair share hold although Redis
    hands messages out in the order they were sent. Every queued job still has a turn of
    its own: a message that ran another job leaves that job's message for X. A job whose
    worker died is put back in the queue by the sweeper (requeue_lost_jobs) and claimed
    like any other.
    """
    message_job = session.get(Job, job_id)
    if message_job is None:
        return None
    return claim_next(
        session=session,
        queue=message_job.queue,
        worker=worker,
        lease_seconds=lease_seconds,
        max_attempts=max_attempts,
        max_running_per_owner=max_running_per_owner,
    )


def queued_counts(*, session: Session, older_than: timedelta) -> dict[str, int]:
    """How many jobs wait in each queue that should have a turn in the broker by now:
    queued longer than `older_than` ago, or back in the queue after running (a job just
    submitted may have its message on the way)."""
    cutoff = database_now(session) - older_than
    rows = session.execute(
        select(Job.queue, func.count())
        .where(
            Job.status == JobStatus.QUEUED,
            Job.cancel_requested.is_(False),
            or_(Job.created_at < cutoff, Job.started_at.is_not(None)),
            or_(Job.not_before.is_(None), Job.not_before <= database_now(session)),
        )
        .group_by(Job.queue)
    ).all()
    return {queue: int(count) for queue, count in rows}


@dataclass(frozen=True, slots=True)
class Requests:
    """What the users asked of a running job, as its heartbeat reads them."""

    cancel: bool  # stop for good (cancelled)
    preempt: bool  # checkpoint and go back to the queue, to resume later


def assert_held(*, session: Session, job_id: uuid.UUID, worker: str) -> None:
    """Lock the job's row if `worker` still holds it, else LeaseLost: what a transaction
    that writes for a running job (its checkpoints, the rows a resume replaces) does first,
    so a worker that lost the job cannot write over its new owner's work."""
    held = session.scalar(
        select(Job.id)
        .where(Job.id == job_id, Job.worker == worker, Job.status == JobStatus.RUNNING)
        .with_for_update()
    )
    if held is None:
        raise LeaseLost(f"job {job_id} is no longer held by {worker}")


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


# A running job going back to the queue: nobody holds it, and its message must be sent
# again (the sweeper sends one if the sender does not).
_BACK_IN_QUEUE: dict[str, Any] = {
    "status": JobStatus.QUEUED,
    "worker": None,
    "lease_expires_at": None,
    "preempt_requested": False,
    "enqueued_at": None,
    **NO_GANG,
}


def requeue_job(*, session: Session, job_id: uuid.UUID, worker: str, reason: str) -> None:
    """running -> queued by the worker holding it, after its resumable checkpoint: a
    preemption or a shutdown is not a crash, so the attempt it used is given back."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == JobStatus.RUNNING)
        .values(**_BACK_IN_QUEUE, attempt=Job.attempt - 1)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise InvalidTransition(f"job {job_id} is not running on {worker}")
    add_event(session=session, job_id=job_id, kind="requeued", message=reason)


def requeue_after_crash(
    *, session: Session, job_id: uuid.UUID, worker: str, max_attempts: int, reason: str
) -> bool:
    """running -> queued by the worker holding it after a crash it saw (a rank of a
    distributed job died): the attempt stays used. False, and nothing changed, when no
    attempt is left (the caller fails the job)."""
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.worker == worker,
            Job.status == JobStatus.RUNNING,
            Job.attempt < max_attempts,
        )
        .values(**_BACK_IN_QUEUE)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        assert_held(session=session, job_id=job_id, worker=worker)  # LeaseLost if not ours
        return False
    add_event(session=session, job_id=job_id, kind="requeued", message=reason)
    return True


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


def jobs_to_resend(*, session: Session, older_than: timedelta) -> list[Job]:
    """Queued jobs whose message may be lost, oldest first: sent longer than `older_than`
    ago, never sent (and not just submitted), or back in the queue without one (their
    worker died): the sweeper sends "work on job X" again where the broker lacks a turn."""
    cutoff = database_now(session) - older_than
    unsent = and_(
        Job.enqueued_at.is_(None), or_(Job.created_at < cutoff, Job.started_at.is_not(None))
    )
    stale_queued = and_(Job.status == JobStatus.QUEUED, or_(Job.enqueued_at < cutoff, unsent))
    return list(session.scalars(select(Job).where(stale_queued).order_by(Job.created_at, Job.id)))


def requeue_lost_jobs(*, session: Session, max_attempts: int) -> int:
    """Running jobs whose lease ran out with attempts left go back to the queue (their
    attempt stays used: a crash), to be resumed from their last resumable checkpoint by
    whichever worker's turn comes. Only the sweeper does this, so a job whose heartbeats
    could not land during a database outage keeps its worker (the sweeper waits one lease
    after an outage). Returns how many."""
    now = database_now(session)
    message = "its worker stopped sending heartbeats; back in the queue"
    ids = session.scalars(
        update(Job)
        .where(
            Job.status == JobStatus.RUNNING,
            Job.lease_expires_at < now,
            Job.attempt < max_attempts,
            Job.cancel_requested.is_(False),
        )
        .values(**_BACK_IN_QUEUE)
        .returning(Job.id)
    ).all()
    for job_id in ids:
        add_event(session=session, job_id=job_id, kind="requeued", message=message)
    return len(ids)


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
