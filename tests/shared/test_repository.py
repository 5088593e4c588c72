"""Guarded job transitions, claims and the sweeper on the real PostgreSQL and Redis."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
import redis
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.config import Settings
from shared.db import session_scope
from shared.errors import InvalidTransition, LeaseLost
from shared.models import Checkpoint, Job, JobStatus, utcnow
from shared.queues import make_celery, send_job
from shared.sweeper import sweep_once
from tests.support.fixture_types import NewJob


def _claim(sessions: sessionmaker[Session], job: Job, worker: str, lease: int = 60) -> Job | None:
    with session_scope(sessions) as session:
        return repository.claim_job(
            session=session, job_id=job.id, worker=worker, lease_seconds=lease, max_attempts=3
        )


def test_claim_is_exclusive_while_leased(
    sessions: sessionmaker[Session], clean_db: None, new_job: NewJob
) -> None:
    job = new_job()
    first = _claim(sessions, job, "w1")
    assert first is not None and first.status == "running" and first.attempt == 1
    assert _claim(sessions, job, "w2") is None  # a redelivered message must not train it again


def test_expired_lease_is_reclaimed_once_the_sweeper_requeues_it(
    sessions: sessionmaker[Session], clean_db: None, new_job: NewJob
) -> None:
    job = new_job()
    assert _claim(sessions, job, "w1", lease=-1) is not None
    # A message naming it does not take it over: after a database outage its worker may
    # still be alive, and only the sweeper (which waits one lease then) puts it back.
    assert _claim(sessions, job, "w2") is None
    with session_scope(sessions) as session:
        assert repository.requeue_lost_jobs(session=session, max_attempts=3) == 1
    second = _claim(sessions, job, "w2")
    assert second is not None and second.worker == "w2" and second.attempt == 2
    # The first worker lost its claim: it may not finish the job.
    with pytest.raises(InvalidTransition), session_scope(sessions) as session:
        repository.finish_job(
            session=session, job_id=job.id, worker="w1", status=JobStatus.SUCCEEDED
        )


def test_finish_only_from_running(
    sessions: sessionmaker[Session], clean_db: None, new_job: NewJob
) -> None:
    job = new_job()
    with pytest.raises(InvalidTransition), session_scope(sessions) as session:
        repository.finish_job(
            session=session, job_id=job.id, worker="w1", status=JobStatus.SUCCEEDED
        )
    _claim(sessions, job, "w1")
    with session_scope(sessions) as session:
        repository.finish_job(
            session=session, job_id=job.id, worker="w1", status=JobStatus.FAILED, error="boom"
        )
    assert _claim(sessions, job, "w2") is None  # final jobs stay final
    with sessions() as session:
        row = session.get(Job, job.id)
        assert row is not None and row.status == "failed" and row.error == "boom"
        assert row.finished_at is not None


def test_cancel_flag_reaches_heartbeat(
    sessions: sessionmaker[Session], clean_db: None, new_job: NewJob
) -> None:
    job = new_job()
    _claim(sessions, job, "w1")
    beat = {
        "job_id": job.id,
        "worker": "w1",
        "lease_seconds": 60,
        "step": 5,
        "total": 10,
        "epoch": 1,
    }
    with session_scope(sessions) as session:
        assert repository.heartbeat(session=session, **beat).cancel is False
        repository.request_cancel(session=session, job_id=job.id)
    with session_scope(sessions) as session:
        assert repository.heartbeat(session=session, **beat).cancel is True
        row = session.get(Job, job.id)
        assert row is not None and row.status == "running" and row.progress_step == 5
    # Another worker's heartbeat on this job is refused: it no longer holds the claim.
    with pytest.raises(LeaseLost), session_scope(sessions) as session:
        repository.heartbeat(session=session, **{**beat, "worker": "w2"})


def test_cancel_is_guarded(
    sessions: sessionmaker[Session], clean_db: None, new_job: NewJob
) -> None:
    job = new_job()
    with session_scope(sessions) as session:
        repository.request_cancel(session=session, job_id=job.id)
    assert _claim(sessions, job, "w1") is None  # a cancelled job is never claimed
    with pytest.raises(InvalidTransition), session_scope(sessions) as session:
        repository.request_cancel(session=session, job_id=job.id)


def test_sweeper_resends_lost_messages_and_fails_abandoned(
    sessions: sessionmaker[Session],
    clean_db: None,
    settings: Settings,
    redis_client: redis.Redis,
    new_job: NewJob,
) -> None:
    lost = new_job()  # never sent
    abandoned = new_job()
    old = utcnow() - timedelta(hours=1)
    with session_scope(sessions) as session:
        session.execute(update(Job).values(created_at=old))
        session.execute(
            update(Job)
            .where(Job.id == abandoned.id)
            .values(status="running", attempt=3, lease_expires_at=old, worker="gone")
        )
    counts = sweep_once(sessions=sessions, celery=make_celery(settings), settings=settings)
    assert counts == {"resent": 1, "requeued": 0, "sweep_passes": 0, "cancelled": 0, "failed": 1}
    assert redis_client.llen("train") == 1
    assert str(lost.id) in redis_client.lindex("train", 0).decode()  # type: ignore[union-attr]
    with sessions() as session:
        row = session.get(Job, abandoned.id)
        assert row is not None and row.status == "failed" and "worker lost" in (row.error or "")
    # Nothing left to do on the next pass: the message was just sent.
    assert sweep_once(sessions=sessions, celery=make_celery(settings), settings=settings) == {
        "resent": 0,
        "requeued": 0,
        "sweep_passes": 0,
        "cancelled": 0,
        "failed": 0,
    }


def test_right_after_a_database_outage_the_sweeper_leaves_running_jobs_alone(
    sessions: sessionmaker[Session],
    clean_db: None,
    settings: Settings,
    redis_client: redis.Redis,
    new_job: NewJob,
) -> None:
    # Their leases ran out only because no heartbeat could land during the outage.
    last_try, retrying = new_job(), new_job()
    old = utcnow() - timedelta(hours=1)
    with session_scope(sessions) as session:
        session.execute(update(Job).values(created_at=old, enqueued_at=old))
        for job, attempt in ((last_try, 3), (retrying, 1)):
            session.execute(
                update(Job)
                .where(Job.id == job.id)
                .values(status="running", attempt=attempt, lease_expires_at=old, worker="w")
            )
    celery = make_celery(settings)
    counts = sweep_once(sessions=sessions, celery=celery, settings=settings, judge_leases=False)
    assert (
        counts == {"resent": 0, "requeued": 0, "sweep_passes": 0}
        and redis_client.llen("train") == 0
    )
    with sessions() as session:
        assert {session.get(Job, j.id).status for j in (last_try, retrying)} == {"running"}  # type: ignore[union-attr]
    # One lease later they are judged as usual.
    counts = sweep_once(sessions=sessions, celery=celery, settings=settings)
    assert counts == {"resent": 1, "requeued": 1, "sweep_passes": 0, "cancelled": 0, "failed": 1}


def test_the_sweeper_puts_a_dead_worker_s_job_back_in_the_queue_with_a_turn(
    sessions: sessionmaker[Session],
    clean_db: None,
    settings: Settings,
    redis_client: redis.Redis,
    new_job: NewJob,
) -> None:
    job = new_job()
    assert _claim(sessions, job, "w1") is not None
    now = utcnow()
    with session_scope(sessions) as session:  # sent 100 s ago; the lease ran out 1 s ago
        session.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(
                enqueued_at=now - timedelta(seconds=100),
                lease_expires_at=now - timedelta(seconds=1),
            )
        )
    sweep = {"sessions": sessions, "celery": make_celery(settings), "settings": settings}
    assert sweep_once(**sweep) == {
        "resent": 1,
        "requeued": 1,
        "sweep_passes": 0,
        "cancelled": 0,
        "failed": 0,
    }
    with sessions() as session:
        row = session.get(Job, job.id)
        assert row is not None and row.status == "queued" and row.worker is None
        assert row.attempt == 1  # the crash used its attempt
        kinds = [e.kind for e in repository.list_events(session=session, job_id=job.id)]
    assert kinds[-2:] == ["requeued", "resent"]
    assert sweep_once(**sweep)["resent"] == 0  # its message waits: not again
    assert redis_client.llen("train") == 1
    with session_scope(sessions) as session:  # the next worker's turn takes it
        second = repository.claim_next(
            session=session, queue="train", worker="w2", lease_seconds=60, max_attempts=3
        )
    assert second is not None and second.id == job.id and second.attempt == 2


def test_sweeper_cancels_a_cancelled_job_whose_worker_died(
    sessions: sessionmaker[Session],
    clean_db: None,
    settings: Settings,
    redis_client: redis.Redis,
    new_job: NewJob,
) -> None:
    job = new_job()
    assert _claim(sessions, job, "w1", lease=-1) is not None
    with session_scope(sessions) as session:
        repository.request_cancel(session=session, job_id=job.id)
    counts = sweep_once(sessions=sessions, celery=make_celery(settings), settings=settings)
    assert counts == {"resent": 0, "requeued": 0, "sweep_passes": 0, "cancelled": 1, "failed": 0}
    with sessions() as session:
        row = session.get(Job, job.id)
        assert row is not None and row.status == "cancelled" and row.finished_at is not None


def test_resume_states_beyond_the_newest_are_pruned_with_the_write(
    sessions: sessionmaker[Session], new_job: NewJob
) -> None:
    job = new_job()

    def save(step: int, tag: str, resume: bool) -> None:
        with session_scope(sessions) as session:
            repository.save_checkpoint(
                session=session, job_id=job.id, step=step, epoch=1, tag=tag,
                model_state=b"w%d" % step, optimizer_state=b"o", sha256="0" * 64,
                resume_state=b"r%d" % step if resume else None, keep_resumable=2,
            )  # fmt: skip

    save(5, "step", True)
    save(10, "epoch", True)
    save(10, "best", False)
    save(15, "step", True)
    save(20, "epoch", True)
    with sessions() as session:
        rows = session.execute(
            select(Checkpoint.step, Checkpoint.tag, Checkpoint.resume_state.is_not(None))
            .where(Checkpoint.job_id == job.id)
            .order_by(Checkpoint.step, Checkpoint.tag)
        ).all()
        latest = repository.latest_resumable(session=session, job_id=job.id)
    # The step checkpoint at 5 is gone; the epoch one at 10 keeps its weights, not its state.
    assert [tuple(r) for r in rows] == [
        (10, "best", False), (10, "epoch", False), (15, "step", True), (20, "epoch", True)
    ]  # fmt: skip
    assert latest is not None and latest.step == 20 and latest.resume_state == b"r20"
    with session_scope(sessions) as session:  # a resumed attempt drops what came after
        repository.delete_checkpoints_after(session=session, job_id=job.id, step=15)
        left = repository.list_checkpoints(session=session, job_id=job.id)
    assert [(c.step, c.tag) for c in left] == [(10, "epoch"), (10, "best"), (15, "step")]


def test_leases_are_written_with_the_database_clock(
    sessions: sessionmaker[Session], new_job: NewJob
) -> None:
    job = new_job()
    with session_scope(sessions) as session:  # PostgreSQL's now() is the transaction's start
        claimed = repository.claim_job(
            session=session, job_id=job.id, worker="w", lease_seconds=60, max_attempts=3
        )
        now = session.scalar(select(func.now()))
    assert claimed is not None and claimed.heartbeat_at == now  # not a host's clock
    assert claimed.lease_expires_at == now + timedelta(seconds=60)


def test_the_sweeper_resends_only_the_messages_the_broker_lost(
    sessions: sessionmaker[Session],
    settings: Settings,
    redis_client: redis.Redis,
    new_job: NewJob,
) -> None:
    celery = make_celery(settings)
    jobs = [new_job() for _ in range(5)]
    for job in jobs:
        send_job(celery, job_id=str(job.id), kind="train", queue="train")

    def age_everything() -> None:  # as if created and sent an hour ago
        old = utcnow() - timedelta(hours=1)
        with session_scope(sessions) as session:
            session.execute(update(Job).values(created_at=old, enqueued_at=old))

    sweep = {"sessions": sessions, "celery": celery, "settings": settings}
    age_everything()
    assert sweep_once(**sweep)["resent"] == 0  # every message still waits: no second one
    assert redis_client.llen("train") == 5
    redis_client.delete("train")  # Redis restarted without persistence
    assert sweep_once(**sweep)["resent"] == 5
    age_everything()
    assert sweep_once(**sweep)["resent"] == 0
    assert sorted(_carried(redis_client)) == sorted(str(job.id) for job in jobs)  # one each


def test_a_message_that_ran_another_job_still_counts_as_a_turn(
    sessions: sessionmaker[Session],
    settings: Settings,
    redis_client: redis.Redis,
    new_job: NewJob,
) -> None:
    # A worker took job 0's message but ran the job the claim order put first (job 2's
    # turn by fair share, say): job 2's message now stands for job 0. Queued jobs 0 and 1
    # have two messages between them, so nothing is re-sent, although job 0 has none of
    # its own; once one is lost, job 0 (the oldest without one) gets a new one.
    celery = make_celery(settings)
    jobs = [new_job() for _ in range(3)]
    for job in jobs[1:]:
        send_job(celery, job_id=str(job.id), kind="train", queue="train")
    old = utcnow() - timedelta(hours=1)
    with session_scope(sessions) as session:
        for age, job in enumerate(jobs):  # job 0 oldest
            then = old + timedelta(seconds=age)
            session.execute(
                update(Job).where(Job.id == job.id).values(created_at=then, enqueued_at=then)
            )
        session.execute(
            update(Job).where(Job.id == jobs[2].id).values(status="succeeded", finished_at=old)
        )
    sweep = {"sessions": sessions, "celery": celery, "settings": settings}
    assert sweep_once(**sweep)["resent"] == 0
    assert redis_client.llen("train") == 2
    redis_client.rpop("train")  # the oldest message (job 1's) is lost
    assert sweep_once(**sweep)["resent"] == 1
    assert set(_carried(redis_client)) == {str(jobs[0].id), str(jobs[2].id)}


def _carried(redis_client: redis.Redis) -> list[str]:
    """The job ids of the messages waiting in the "train" queue."""
    return [
        json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0]
        for raw in redis_client.lrange("train", 0, -1)  # type: ignore[union-attr]
    ]


def test_metric_overview_leaves_out_a_series_deleted_while_it_reads(
    sessions: sessionmaker[Session], new_job: NewJob
) -> None:
    """Read committed: rows counted by the first statement may be gone by the next (the
    job deleted, a resumed attempt replacing its steps). Found by the contract fuzzer as
    a 500 on GET /jobs/<id>/summary."""
    from sqlalchemy import delete, event

    from shared.models import Metric

    job = new_job()
    with session_scope(sessions) as session:
        for name in ("loss", "accuracy"):
            session.add_all(Metric(job_id=job.id, split="val", name=name, step=s, epoch=0,
                                   value=float(s)) for s in (1, 2))  # fmt: skip
    with sessions() as session:
        deleted: list[int] = []

        def after_the_count(conn, cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
            if "count(" in statement and not deleted:  # the GROUP BY has run
                with session_scope(sessions) as other:
                    other.execute(delete(Metric).where(Metric.name == "loss"))
                deleted.append(1)

        connection = session.connection()
        event.listen(connection, "after_cursor_execute", after_the_count)
        overview = repository.metric_overview(session=session, job_id=job.id)
    assert deleted
    assert [(s["name"], s["points"], s["last"]["step"]) for s in overview] == [("accuracy", 2, 2)]
