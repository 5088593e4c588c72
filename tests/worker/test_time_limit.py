"""A job over its wall-clock quota stops at a step boundary with a resumable checkpoint
and ends as failed, saying which limit it reached."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.models import Checkpoint, Job
from tests.support.fixture_types import NewJob
from tests.support.specs import TINY
from worker.tasks import execute_train
from worker.training import loop
from worker.training.time_limit import TimeLimit


def test_a_job_over_its_time_limit_fails_with_a_checkpoint_kept(
    sessions: sessionmaker[Session],
    settings: Settings,
    new_job: NewJob,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_step = loop.train_step

    def slow_step(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.05)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", slow_step)
    job_id = new_job({**TINY, "train": {**TINY["train"], "epochs": 50}}).id  # 400 steps
    limited = settings.model_copy(update={"quota_max_job_seconds": 0.5})
    assert execute_train(job_id, worker="w", sessions=sessions, settings=limited) == "failed"
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.attempt == 1
        assert job.error == (
            "time limit of 0.5 s reached (TRAINYARD_QUOTA_MAX_JOB_SECONDS); "
            "its last checkpoint is kept"
        )
        assert job.summary is not None and 0 < job.summary["steps"] < 400
        newest = session.scalars(
            select(Checkpoint)
            .where(Checkpoint.job_id == job_id, Checkpoint.resume_state.is_not(None))
            .order_by(Checkpoint.step.desc())
        ).first()
        assert newest is not None and newest.step == job.summary["steps"]


def test_time_used_by_earlier_attempts_counts() -> None:
    now = [100.0]
    limit = TimeLimit(limit_seconds=60, used_seconds=50, clock=lambda: now[0])
    assert not limit.should_suspend()
    now[0] += 9.9
    assert not limit.should_suspend()
    now[0] += 0.2  # 50 s before this attempt + 10.1 s in it
    assert limit.should_suspend() and limit.reached
