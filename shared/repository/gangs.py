"""Gang scheduling of a job over several nodes, through its row.

The worker that claims such a job is node 0: it opens the gang (an id, the size, the
address of the rendezvous store it serves, a deadline) and sends the job's queue one
message per missing node. A worker whose turn comes joins an open gang of its queue
before it claims anything else (so two half-formed gangs do not wait on each other),
taking the next node rank. Once every node has joined, each starts its ranks; a gang
that has not filled by its deadline is released: the job goes back to the queue (its
attempt given back) and is not claimed again for a while, so a job that needs more
nodes than are free never holds a worker for longer than one wait at a time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import case, delete, exists, func, select, update
from sqlalchemy.orm import Session

from shared.errors import LeaseLost
from shared.models import Checkpoint, Job, JobNode, JobStatus
from shared.repository.jobs import add_event, database_now


@dataclass(frozen=True, slots=True)
class Seat:
    """A node's place in a gang: what its ranks need to find the others."""

    job_id: uuid.UUID
    gang_id: str
    node_rank: int
    size: int
    host: str
    port: int


def open_gang(
    *,
    session: Session,
    job_id: uuid.UUID,
    worker: str,
    size: int,
    host: str,
    port: int,
    join_seconds: float,
) -> Seat:
    """Node 0 (the worker holding the job) opens its gang; LeaseLost if it no longer
    holds the job."""
    gang_id = uuid.uuid4().hex
    deadline = database_now(session) + timedelta(seconds=join_seconds)
    opened = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.status == JobStatus.RUNNING)
        .values(
            gang_id=gang_id, gang_size=size, gang_host=host, gang_port=port, gang_deadline=deadline
        )
    )
    if opened.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(f"job {job_id} is no longer held by {worker}")
    session.execute(delete(JobNode).where(JobNode.job_id == job_id))  # an earlier gang's
    session.add(JobNode(job_id=job_id, node_rank=0, gang_id=gang_id, worker=worker))
    add_event(session=session, job_id=job_id, kind="gang",
              message=f"waiting up to {join_seconds:g} s for {size - 1} more node(s)",
              data={"gang": gang_id, "size": size})  # fmt: skip
    return Seat(job_id=job_id, gang_id=gang_id, node_rank=0, size=size, host=host, port=port)


def join_gang(*, session: Session, queue: str, worker: str) -> Seat | None:
    """Take the next node rank of an open gang of `queue` that still misses nodes (the
    one that opened first); None when there is none."""
    now = database_now(session)
    members = (
        select(func.count())
        .select_from(JobNode)
        .where(JobNode.job_id == Job.id, JobNode.gang_id == Job.gang_id)
        .correlate(Job)
        .scalar_subquery()
    )
    pick = (
        select(Job)
        .where(
            Job.queue == queue,
            Job.status == JobStatus.RUNNING,
            Job.gang_id.is_not(None),
            Job.gang_deadline > now,
            members < Job.gang_size,
        )
        .order_by(Job.gang_deadline, Job.id)
        .limit(1)
    )
    if session.get_bind().dialect.name == "postgresql":
        # Not SKIP LOCKED: workers called together must queue up for the seats, not pass
        # the gang by while another one takes its seat.
        pick = pick.with_for_update(of=Job)
    job = session.scalars(pick).first()
    if job is None:
        return None
    assert job.gang_id is not None and job.gang_size is not None
    assert job.gang_host is not None and job.gang_port is not None
    # Counted again now that the row is locked: the pick may have waited for a joiner.
    rank = _seats_taken(session, job.id, job.gang_id)
    if rank >= job.gang_size:
        return None
    session.add(JobNode(job_id=job.id, node_rank=rank, gang_id=job.gang_id, worker=worker))
    add_event(session=session, job_id=job.id, kind="gang",
              message=f"{worker} joined as node {rank} of {job.gang_size}",
              data={"gang": job.gang_id, "node": rank})  # fmt: skip
    return Seat(job_id=job.id, gang_id=job.gang_id, node_rank=rank, size=job.gang_size,
                host=job.gang_host, port=job.gang_port)  # fmt: skip


def gang_members(*, session: Session, seat: Seat) -> int:
    """How many nodes have joined the gang so far."""
    return _seats_taken(session, seat.job_id, seat.gang_id)


def _seats_taken(session: Session, job_id: uuid.UUID, gang_id: str) -> int:
    count = session.scalar(
        select(func.count()).where(JobNode.job_id == job_id, JobNode.gang_id == gang_id)
    )
    return int(count or 0)


def gang_is_open(*, session: Session, seat: Seat) -> bool:
    """Whether the job is still running with this gang (a joined node's check)."""
    gang_id = session.scalar(
        select(Job.gang_id).where(Job.id == seat.job_id, Job.status == JobStatus.RUNNING)
    )
    return gang_id == seat.gang_id


def release_gang(
    *, session: Session, seat: Seat, worker: str, retry_after_seconds: float, reason: str
) -> None:
    """Node 0 gives up a gang that did not fill: the job back to the queue (its attempt
    given back: nothing ran), not claimable for `retry_after_seconds`."""
    now = database_now(session)
    trained = exists().where(Checkpoint.job_id == Job.id)
    released = session.execute(
        update(Job)
        .where(Job.id == seat.job_id, Job.worker == worker, Job.status == JobStatus.RUNNING)
        .values(
            status=JobStatus.QUEUED,
            worker=None,
            lease_expires_at=None,
            enqueued_at=None,
            attempt=Job.attempt - 1,
            preempt_requested=False,  # a gang that never trained: a preemption is moot
            # The wall-clock quota counts from the first start: a job that never trained
            # (no checkpoint) has not started yet, however long its gangs waited.
            started_at=case((trained, Job.started_at), else_=None),
            not_before=now + timedelta(seconds=retry_after_seconds),
            **NO_GANG,
        )
    )
    if released.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(f"job {seat.job_id} is no longer held by {worker}")
    session.execute(delete(JobNode).where(JobNode.job_id == seat.job_id))
    add_event(session=session, job_id=seat.job_id, kind="requeued", message=reason)


def close_gang(*, session: Session, seat: Seat) -> None:
    """The gang's training is over (however it ended): no node may join it any more."""
    session.execute(
        update(Job).where(Job.id == seat.job_id, Job.gang_id == seat.gang_id).values(**NO_GANG)
    )
    session.execute(
        delete(JobNode).where(JobNode.job_id == seat.job_id, JobNode.gang_id == seat.gang_id)
    )


NO_GANG = {
    "gang_id": None,
    "gang_size": None,
    "gang_host": None,
    "gang_port": None,
    "gang_deadline": None,
}
