"""Job rows: create, read, list, cancel, and the append-only event log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.orm import Session

from shared.errors import InvalidTransition, JobNotFound
from shared.models import Job, JobEvent, JobStatus, utcnow


def database_now(session: Session) -> Any:
    """The database's clock for a statement to use: PostgreSQL's now() (the transaction's
    start), evaluated by the server, so it costs no round trip of its own; the embedded
    SQLite runs on this host, whose clock is then the database's."""
    if session.get_bind().dialect.name == "postgresql":
        return func.now()
    return utcnow()


def create_job(
    *,
    session: Session,
    owner: str,
    kind: str,
    spec: dict[str, Any],
    queue: str,
    priority: int = 5,
    source_job_id: uuid.UUID | None = None,
    enqueued_at: datetime | None = None,
    idempotency_key: str | None = None,
    request_sha256: str | None = None,
    sweep_id: uuid.UUID | None = None,
) -> Job:
    """Insert a queued job and its 'queued' event (the caller commits before sending)."""
    job = Job(
        enqueued_at=enqueued_at,
        owner=owner,
        kind=kind,
        spec=spec,
        queue=queue,
        priority=priority,
        status=JobStatus.QUEUED,
        source_job_id=source_job_id,
        idempotency_key=idempotency_key,
        request_sha256=request_sha256,
        sweep_id=sweep_id,
        created_at=utcnow(),
    )
    session.add(job)
    session.flush()
    add_event(session=session, job_id=job.id, kind="queued", message=f"queued on {queue}")
    return job


def get_job(*, session: Session, job_id: uuid.UUID, owner: str | None = None) -> Job:
    """The job, if it exists and (when owner is given) belongs to that owner."""
    job = session.get(Job, job_id)
    if job is None or (owner is not None and job.owner != owner):
        raise JobNotFound(f"job {job_id} not found")
    return job


def list_jobs(
    *,
    session: Session,
    owner: str,
    status: str | None = None,
    kind: str | None = None,
    limit: int = 50,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> list[Job]:
    """Newest first; `before` is the (created_at, id) of the last job of the previous page."""
    query = select(Job).where(Job.owner == owner)
    if status:
        query = query.where(Job.status == status)
    if kind:
        query = query.where(Job.kind == kind)
    if before is not None:
        at, last_id = before
        query = query.where(or_(Job.created_at < at, and_(Job.created_at == at, Job.id < last_id)))
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    return list(session.scalars(query))


def mark_enqueued(*, session: Session, job_id: uuid.UUID) -> None:
    """Remember when the job's message was last sent (the sweeper re-sends stale ones),
    on the database's clock, which the sweeper judges with."""
    session.execute(update(Job).where(Job.id == job_id).values(enqueued_at=database_now(session)))


def relax_durability(session: Session) -> None:
    """Let this transaction's commit return before its WAL reaches the disk (PostgreSQL).

    For the rows of an inference job only: a prediction is a short-lived request, and a
    database crash in the next few hundred milliseconds would lose at most that request
    (the client retries), never training results or checkpoints. It saves a WAL flush
    per commit (about 1.5 ms on this machine), three per prediction. Consistency is
    unchanged: the commit is atomic and ordered like any other.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))


def request_cancel(*, session: Session, job_id: uuid.UUID) -> None:
    """Queued jobs are cancelled at once; running ones stop at their next heartbeat.

    Both are single guarded UPDATEs, so a worker claiming the job at the same moment
    either sees the cancel flag or finds the job already cancelled.
    """
    now = utcnow()
    queued = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.CANCELLED, cancel_requested=True, finished_at=now)
    )
    if queued.rowcount != 1:  # type: ignore[attr-defined]
        running = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
            .values(cancel_requested=True)
        )
        if running.rowcount != 1:  # type: ignore[attr-defined]
            raise InvalidTransition(f"job {job_id} has already ended")
    add_event(session=session, job_id=job_id, kind="cancel_requested")


def request_preempt(*, session: Session, job_id: uuid.UUID) -> None:
    """A running job checkpoints at its next step, goes back to the queue and resumes later
    (one guarded UPDATE; 409 when the job is not running)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
        .values(preempt_requested=True)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise InvalidTransition(f"job {job_id} is not running; only a running job is preempted")
    add_event(session=session, job_id=job_id, kind="preempt_requested")


def add_event(
    *,
    session: Session,
    job_id: uuid.UUID,
    kind: str,
    message: str = "",
    data: dict[str, Any] | None = None,
) -> None:
    """Append one lifecycle event."""
    session.add(JobEvent(job_id=job_id, kind=kind, message=message, data=data, at=utcnow()))


def list_events(*, session: Session, job_id: uuid.UUID) -> list[JobEvent]:
    """A job's events, oldest first."""
    query = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
    return list(session.scalars(query))
