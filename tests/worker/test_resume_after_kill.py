"""A training job whose worker process is SIGKILLed goes on from its last resumable
checkpoint when it is claimed again, and ends exactly as if it had never been stopped."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
import uuid
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.config import Settings
from shared.db import session_scope
from shared.models import Job, LayerTrace, Metric
from tests.support.fixture_types import NewJob
from tests.support.jobs import job_outcome
from worker.tasks import execute_train

SPEC: dict[str, Any] = {
    "model": {"preset": "neural_network"},
    "data": {"dataset": "digits", "image_size": 28, "val_fraction": 0.2},
    "train": {"epochs": 3, "batch_size": 64, "checkpoint_every_steps": 5, "seed": 11,
              "optimizer": {"name": "Adam", "lr": 0.001},
              "scheduler": {"name": "StepLR", "step_size": 1, "gamma": 0.5}},
    "hooks": {"every_n_steps": 4},
}  # fmt: skip
STEPS = 3 * 23  # 1438 training digits at batch 64: 23 steps an epoch


def _fast(settings: Settings) -> Settings:
    return settings.model_copy(update={"heartbeat_seconds": 0.05, "flush_seconds": 0.0})


def train_slowly(database_url: str, job_id: str) -> None:
    """A worker process: execute_train with each step slowed down, so it can be killed
    part-way (the delay changes no number)."""
    from worker.training import loop

    real_step = loop.train_step

    def slow_step(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.03)
        return real_step(*args, **kwargs)

    loop.train_step = slow_step  # type: ignore[assignment]
    from shared.db import make_engine, make_session_factory

    sessions = make_session_factory(make_engine(database_url))
    settings = _fast(Settings(database_url=database_url))
    execute_train(uuid.UUID(job_id), worker="doomed", sessions=sessions, settings=settings)


def kill_mid_job(
    sessions: sessionmaker[Session], pg_url: str, job_id: uuid.UUID, *, after_step: int
) -> None:
    """Train the job in a worker process (train_slowly) and SIGKILL it once the job's
    progress reached `after_step`."""
    child = multiprocessing.get_context("spawn").Process(
        target=train_slowly, args=(pg_url, str(job_id))
    )
    child.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with sessions() as session:
            job = session.get(Job, job_id)
            assert job is not None
            if job.status != "queued" and job.progress_step >= after_step:
                break
        time.sleep(0.02)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)


def test_a_killed_worker_s_job_resumes_and_ends_as_if_never_stopped(
    sessions: sessionmaker[Session], pg_url: str, settings: Settings, new_job: NewJob
) -> None:
    whole = new_job(SPEC).id
    assert execute_train(whole, worker="w", sessions=sessions, settings=settings) == "succeeded"

    killed = new_job(SPEC).id
    kill_mid_job(sessions, pg_url, killed, after_step=random.randint(8, STEPS - 12))
    with sessions() as session:
        job = session.get(Job, killed)
        assert job is not None and job.status == "running", "killed before it ended"
        stopped_at = job.progress_step
    with session_scope(sessions) as session:
        # As if the dead worker's lease ran out and the sweeper put the job back in the queue.
        expired = update(Job).where(Job.id == killed).values(lease_expires_at=Job.created_at)
        session.execute(expired)
        assert repository.requeue_lost_jobs(session=session, max_attempts=3) == 1
        # Rows the dead attempt wrote past its last resumable checkpoint must be replaced,
        # not kept: make them wrong (as a GPU's nondeterminism could) to see that they are.
        ckpt = repository.latest_resumable(session=session, job_id=killed)
        assert ckpt is not None
        last_checkpoint = ckpt.step
        for model, column in ((Metric, Metric.value), (LayerTrace, LayerTrace.norm)):
            session.execute(
                update(model)
                .where(model.job_id == killed, model.step > last_checkpoint)
                .values({column: -1.0})
            )
    assert execute_train(killed, worker="w2", sessions=sessions, settings=_fast(settings)) == (
        "succeeded"
    ), f"killed after step {stopped_at}"

    with sessions() as session:
        events = [e.message for e in repository.list_events(session=session, job_id=killed)]
        resumed = [m for m in events if m.startswith("resumed from step ")]
        attempt = session.get(Job, killed).attempt  # type: ignore[union-attr]
    assert len(resumed) == 1 and resumed[0].endswith("(attempt 2)") and attempt == 2
    resumed_from = int(resumed[0].split()[3])
    assert 0 < resumed_from == last_checkpoint <= stopped_at, (resumed, stopped_at)
    with sessions() as session:  # the second attempt trained only the steps after it
        job = session.get(Job, killed)
        assert job is not None and job.summary is not None
        assert job.summary["resumed_from_step"] == resumed_from
    assert job_outcome(sessions, killed) == job_outcome(sessions, whole), (
        f"killed after step {stopped_at}"
    )
