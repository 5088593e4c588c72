"""Preemption and warm shutdown: the running job checkpoints, goes back to the queue without
using an attempt, and its resumed run ends exactly like an uninterrupted one."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from celery.signals import worker_shutting_down
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.config import Settings
from shared.db import session_scope
from shared.models import Job
from tests.support.fixture_types import NewJob
from tests.support.jobs import job_outcome
from tests.support.specs import TINY
from worker.shutdown import EXIT_DEADLINE, SHUTTING_DOWN
from worker.tasks import _heartbeat, execute_train
from worker.training import loop

SPEC: dict[str, Any] = {
    "model": {"preset": "neural_network"},
    "data": {"dataset": "digits", "image_size": 28},
    "train": {"epochs": 2, "batch_size": 32, "seed": 5,
              "optimizer": {"name": "SGD", "lr": 0.05, "momentum": 0.9}},
    "hooks": {"every_n_steps": 3},
}  # fmt: skip


def _interrupt_mid_run(
    monkeypatch: pytest.MonkeyPatch,
    sessions: sessionmaker[Session],
    settings: Settings,
    job_id: uuid.UUID,
    interrupt: Callable[[], None],
) -> str:
    """Run the task in a thread; once it has stored progress, call `interrupt` (steps are
    slowed down so the interrupt lands part-way even on a fast machine; no number changes)."""
    outcome: list[str] = []
    real_step = loop.train_step

    def slow_step(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.01)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", slow_step)
    fast = settings.model_copy(update={"heartbeat_seconds": 0.02, "flush_seconds": 0.0})
    thread = threading.Thread(
        target=lambda: outcome.append(
            execute_train(job_id, worker="w1", sessions=sessions, settings=fast)
        )
    )
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and thread.is_alive():
        with sessions() as session:
            job = session.get(Job, job_id)
            if job is not None and job.progress_step >= 5:
                break
        time.sleep(0.01)
    interrupt()
    thread.join(60)
    monkeypatch.setattr(loop, "train_step", real_step)
    return outcome[0]


def _messages(redis_client: redis.Redis, queue: str) -> list[str]:
    """The job ids of the task messages waiting on `queue`."""
    bodies = [json.loads(raw) for raw in redis_client.lrange(queue, 0, -1)]
    return [json.loads(base64.b64decode(b["body"]))[0][0] for b in bodies]


def _check_requeued_then_resumed(
    sessions: sessionmaker[Session],
    settings: Settings,
    redis_client: redis.Redis,
    job_id: uuid.UUID,
    whole: uuid.UUID,
    reason: str,
) -> None:
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert (job.status, job.attempt, job.worker, job.preempt_requested) == (
            "queued", 0, None, False
        )  # fmt: skip
        events = [
            (e.kind, e.message) for e in repository.list_events(session=session, job_id=job_id)
        ]
        checkpoint = repository.latest_resumable(session=session, job_id=job_id)
    assert ("requeued", reason) in events
    assert checkpoint is not None and checkpoint.tag == "step"
    assert _messages(redis_client, "train") == [str(job_id)]  # sent again, once
    assert execute_train(job_id, worker="w2", sessions=sessions, settings=settings) == ("succeeded")
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.summary is not None and job.attempt == 1
        assert job.summary["resumed_from_step"] == checkpoint.step > 0
    assert job_outcome(sessions, job_id) == job_outcome(sessions, whole)


@pytest.fixture()
def twins(
    sessions: sessionmaker[Session], settings: Settings, new_job: NewJob
) -> tuple[uuid.UUID, uuid.UUID]:
    """(a job of SPEC trained without interruption, a queued job of the same SPEC)."""
    whole = new_job(SPEC).id
    assert execute_train(whole, worker="w", sessions=sessions, settings=settings) == "succeeded"
    return whole, new_job(SPEC).id


def test_a_warm_shutdown_requeues_the_job_without_using_an_attempt(
    sessions: sessionmaker[Session],
    settings: Settings,
    twins: tuple[uuid.UUID, uuid.UUID],
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    whole, job_id = twins
    try:
        result = _interrupt_mid_run(monkeypatch, sessions, settings, job_id, SHUTTING_DOWN.set)
    finally:
        SHUTTING_DOWN.clear()
    assert result == "requeued"
    _check_requeued_then_resumed(
        sessions, settings, redis_client, job_id, whole, "the worker is shutting down"
    )


def test_a_preempted_job_resumes_where_it_was(
    sessions: sessionmaker[Session],
    settings: Settings,
    twins: tuple[uuid.UUID, uuid.UUID],
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    whole, job_id = twins

    def preempt() -> None:
        with session_scope(sessions) as session:
            repository.request_preempt(session=session, job_id=job_id)

    assert _interrupt_mid_run(monkeypatch, sessions, settings, job_id, preempt) == "requeued"
    _check_requeued_then_resumed(sessions, settings, redis_client, job_id, whole, "preempted")


def test_celery_s_warm_shutdown_signal_sets_the_flag_and_arms_the_exit() -> None:
    import worker.celery_app  # noqa: F401  (the worker process imports it)

    try:
        worker_shutting_down.send(sender="test@host", sig="SIGTERM", how="Warm", exitcode=0)
        assert SHUTTING_DOWN.is_set()
        assert EXIT_DEADLINE.armed  # the process ends within the grace time, step or not
    finally:
        EXIT_DEADLINE.disarm()  # this process is the test run
        SHUTTING_DOWN.clear()


def test_a_worker_past_its_shutdown_grace_hands_its_job_back_before_exiting(
    sessions: sessionmaker[Session], settings: Settings, new_job: NewJob
) -> None:
    job_id = new_job(TINY).id
    with session_scope(sessions) as session:
        job = repository.claim_job(
            session=session, job_id=job_id, worker="w", lease_seconds=60, max_attempts=3
        )
    assert job is not None
    ended: list[int] = []
    with _heartbeat(sessions, job, "w", settings):  # as execute_train runs a job
        EXIT_DEADLINE.exit_now(30, end=ended.append)  # the step never ended
    assert ended == [1]
    with sessions() as session:
        row = session.get(Job, job_id)
        assert row is not None and row.status == "queued" and row.attempt == 0
        events = [e.message for e in repository.list_events(session=session, job_id=job_id)]
    assert events[-1].startswith("the worker was stopped before its step ended")
