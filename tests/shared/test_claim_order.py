"""Which queued job a free worker runs next: priority first, then fair share between
owners, then age; owners at their running quota wait; two workers never take the same
job. On the real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.db import session_scope
from shared.models import Job, JobStatus, utcnow


def _queue(
    sessions: sessionmaker[Session], owner: str, count: int = 1, *, priority: int = 5
) -> list[uuid.UUID]:
    ids = []
    for _ in range(count):
        with session_scope(sessions) as session:
            job = repository.create_job(
                session=session, owner=owner, kind="train", spec={"x": 1}, queue="train",
                priority=priority,
            )  # fmt: skip
            ids.append(job.id)
    return ids


def _next(sessions: sessionmaker[Session], max_running: int | None = None) -> Job | None:
    with session_scope(sessions) as session:
        return repository.claim_next(
            session=session, queue="train", worker="w", lease_seconds=60, max_attempts=3,
            max_running_per_owner=max_running,
        )  # fmt: skip


def _finish(sessions: sessionmaker[Session], job: Job) -> None:
    with session_scope(sessions) as session:
        repository.finish_job(
            session=session, job_id=job.id, worker="w", status=JobStatus.SUCCEEDED
        )


def test_the_highest_priority_runs_first_then_the_oldest(
    sessions: sessionmaker[Session], clean_db: None
) -> None:
    low = _queue(sessions, "a", priority=1)
    default = _queue(sessions, "a", 2)
    high = _queue(sessions, "a", priority=9)
    order = []
    while (job := _next(sessions)) is not None:
        order.append(job.id)
        _finish(sessions, job)
    assert order == [*high, *default, *low]


def test_another_owners_first_job_waits_for_at_most_one_of_a_big_backlog(
    sessions: sessionmaker[Session], clean_db: None
) -> None:
    backlog = _queue(sessions, "a", 20)
    first = _next(sessions)  # one worker, already on a's first job
    assert first is not None and first.id == backlog[0]
    late = _queue(sessions, "b", 2)
    started = [first]
    _finish(sessions, first)
    while (job := _next(sessions)) is not None:
        started.append(job)
        _finish(sessions, job)
    owners = [job.owner for job in started]
    assert owners[:5] == ["a", "b", "a", "b", "a"], owners  # turns alternate while both wait
    assert {job.id for job in started} == {*backlog, *late}


def test_fewest_running_jobs_go_first_and_an_owner_at_its_quota_waits(
    sessions: sessionmaker[Session], clean_db: None
) -> None:
    busy = _queue(sessions, "a", 3)
    idle = _queue(sessions, "b", 1)
    assert _next(sessions).id == busy[0]  # type: ignore[union-attr]
    assert _next(sessions).id == idle[0]  # type: ignore[union-attr]  # a runs one, b none
    assert _next(sessions, max_running=1) is None  # a runs 1, b runs 1: both wait
    assert _next(sessions, max_running=2).id == busy[1]  # type: ignore[union-attr]


def test_two_workers_picking_at_once_take_different_jobs(
    sessions: sessionmaker[Session], clean_db: None
) -> None:
    ids = _queue(sessions, "a", 2)
    with sessions() as first, sessions() as second:  # both transactions open at once
        one = repository.claim_next(
            session=first, queue="train", worker="w1", lease_seconds=60, max_attempts=3
        )
        two = repository.claim_next(
            session=second, queue="train", worker="w2", lease_seconds=60, max_attempts=3
        )  # the first pick is locked: SKIP LOCKED takes the next
        assert one is not None and two is not None
        assert {one.id, two.id} == set(ids)
        first.commit()
        second.commit()


def test_a_message_is_a_turn_at_its_queue(
    sessions: sessionmaker[Session], clean_db: None
) -> None:
    waiting = _queue(sessions, "a", priority=1)[0]
    urgent = _queue(sessions, "b", priority=9)[0]
    lost = _queue(sessions, "c", priority=0)[0]
    with session_scope(sessions) as session:  # c's worker died: its lease ran out
        session.execute(
            update(Job)
            .where(Job.id == lost)
            .values(status="running", worker="dead", attempt=1,
                    lease_expires_at=utcnow() - timedelta(seconds=5))
        )  # fmt: skip

    def turn(job_id: uuid.UUID) -> uuid.UUID | None:
        with session_scope(sessions) as session:
            job = repository.claim_for_message(
                session=session, job_id=job_id, worker="w", lease_seconds=60, max_attempts=3
            )
            return job.id if job is not None else None

    assert turn(waiting) == urgent  # the low-priority job's message runs the urgent one
    # A message naming the dead worker's job does not take it over: only the sweeper puts
    # it back in the queue (not right after a database outage); it is a turn like others.
    assert turn(lost) == waiting
    assert turn(lost) is None  # nothing queued
    with session_scope(sessions) as session:
        assert repository.requeue_lost_jobs(session=session, max_attempts=3) == 1
    assert turn(urgent) == lost
