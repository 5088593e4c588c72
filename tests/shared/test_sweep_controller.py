"""The sweep controller's pass on the real PostgreSQL (Optuna's study in its `optuna`
schema): re-entrant, never losing or doubling a trial; invalid proposals recorded."""

from __future__ import annotations

import json
import uuid
from typing import Any

import optuna
import redis
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.config import Settings
from shared.db import session_scope
from shared.models import Job, JobStatus, Metric, Sweep, SweepStatus, SweepTrial
from shared.queues import QUEUE_SWEEPS, SWEEP_TASK, make_celery
from shared.spec import JobSpec
from shared.spec.sweep import SweepSpec
from shared.sweeper import sweep_once
from shared.sweeps.controller import run_pass
from shared.sweeps.study import distributions, open_study
from shared.sweeps.trial_specs import base_with_defaults
from tests.support.specs import MLP_SGD

BASE = MLP_SGD


def make_sweep(sessions: sessionmaker[Session], **fields: Any) -> tuple[uuid.UUID, SweepSpec]:
    base = base_with_defaults(JobSpec.model_validate(BASE))
    spec = SweepSpec.model_validate({"spec": base, **fields})
    with session_scope(sessions) as session:
        sweep = repository.create_sweep(
            session=session, owner="o", name="", spec=spec.model_dump(mode="json"), priority=7
        )
        return sweep.id, spec


def one_pass(sessions: sessionmaker[Session], sweep_id: uuid.UUID, settings: Settings) -> int:
    with session_scope(sessions) as session:
        return len(run_pass(session=session, sweep_id=sweep_id, settings=settings))


def trials(sessions: sessionmaker[Session], sweep_id: uuid.UUID) -> list[SweepTrial]:
    with sessions() as session:
        return repository.sweep_trials(session=session, sweep_id=sweep_id)


def end_job(sessions: sessionmaker[Session], job_id: uuid.UUID | None, status: str,
            accuracy: float | None = None) -> None:  # fmt: skip
    assert job_id is not None
    with session_scope(sessions) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=status))
        if accuracy is not None:
            session.add(Metric(job_id=job_id, split="val", name="accuracy", step=5, epoch=1,
                               value=accuracy))  # fmt: skip


def test_a_pass_queues_parallel_trials_as_jobs_of_the_sweep(
    sessions: sessionmaker[Session], settings: Settings, clean_db: None
) -> None:
    sweep_id, _ = make_sweep(
        sessions, space={"train.optimizer.lr": {"log_uniform": [1e-3, 1.0]}},
        method="random", max_trials=5, parallel=2,
    )  # fmt: skip
    assert one_pass(sessions, sweep_id, settings) == 2
    assert one_pass(sessions, sweep_id, settings) == 0  # a second message: nothing doubled
    rows = trials(sessions, sweep_id)
    assert [t.number for t in rows] == [0, 1] and all(t.state == "running" for t in rows)
    with sessions() as session:
        jobs = [session.get(Job, t.job_id) for t in rows]
    for trial, job in zip(rows, jobs, strict=True):
        assert job is not None and job.sweep_id == sweep_id and job.priority == 7
        assert job.spec["train"]["optimizer"]["lr"] == trial.params["train.optimizer.lr"]
    end_job(sessions, rows[0].job_id, JobStatus.SUCCEEDED, accuracy=0.75)
    end_job(sessions, rows[1].job_id, JobStatus.PRUNED)
    assert one_pass(sessions, sweep_id, settings) == 2  # two ended: two more start
    rows = trials(sessions, sweep_id)
    assert [(t.state, t.value) for t in rows[:2]] == [("complete", 0.75), ("pruned", None)]
    with sessions() as session:
        sweep = repository.get_sweep(session=session, sweep_id=sweep_id)
        assert sweep.best_trial == 0 and sweep.best_value == 0.75


def test_a_trial_asked_but_not_recorded_is_adopted_not_asked_again(
    sessions: sessionmaker[Session], settings: Settings, clean_db: None
) -> None:
    sweep_id, spec = make_sweep(
        sessions, space={"train.optimizer.lr": {"log_uniform": [1e-3, 1.0]}},
        method="random", max_trials=3, parallel=1,
    )  # fmt: skip
    # A pass that died between Optuna's ask and its own commit left this behind.
    study = open_study(spec, sweep_id, settings.resolved_database_url())
    orphan = study.ask(distributions(spec))
    assert one_pass(sessions, sweep_id, settings) == 1
    (trial,) = trials(sessions, sweep_id)
    assert trial.number == orphan.number and trial.params == orphan.params
    assert len(study.get_trials(deepcopy=False)) == 1  # nothing asked besides


def test_a_trial_told_before_a_pass_died_is_settled_once(
    sessions: sessionmaker[Session], settings: Settings, clean_db: None
) -> None:
    sweep_id, spec = make_sweep(
        sessions, space={"train.optimizer.lr": {"choice": [0.1, 0.01]}}, method="grid",
        max_trials=2, parallel=2,
    )  # fmt: skip
    one_pass(sessions, sweep_id, settings)
    first, second = trials(sessions, sweep_id)
    end_job(sessions, first.job_id, JobStatus.SUCCEEDED, accuracy=0.5)
    end_job(sessions, second.job_id, JobStatus.SUCCEEDED, accuracy=0.6)
    study = open_study(spec, sweep_id, settings.resolved_database_url())
    study.tell(first.number, 0.5)  # told, then the pass died before its commit
    one_pass(sessions, sweep_id, settings)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2
    with sessions() as session:
        sweep = repository.get_sweep(session=session, sweep_id=sweep_id)
        assert sweep.status == SweepStatus.SUCCEEDED and sweep.best_trial == second.number


def test_a_proposal_that_makes_a_bad_model_is_recorded_invalid_and_not_run(
    sessions: sessionmaker[Session], settings: Settings, clean_db: None
) -> None:
    sweep_id, _ = make_sweep(
        sessions, space={"model.layers[1].in_features": {"choice": [64, 65]}}, method="grid",
        max_trials=2, parallel=2,
    )  # fmt: skip
    assert one_pass(sessions, sweep_id, settings) == 1
    by_value = {t.params["model.layers[1].in_features"]: t for t in trials(sessions, sweep_id)}
    bad = by_value[65]
    assert bad.state == "invalid" and bad.job_id is None
    assert bad.stop_reason is not None and "model.layers[1]" in bad.stop_reason
    assert by_value[64].state == "running" and by_value[64].job_id is not None
    with sessions() as session:
        assert session.scalar(select(Job.id).where(Job.sweep_id == sweep_id)) is not None


def test_the_sweeper_asks_for_a_pass_of_a_sweep_no_pass_has_seen(
    sessions: sessionmaker[Session], settings: Settings, clean_db: None, redis_client: redis.Redis
) -> None:
    sweep_id, _ = make_sweep(
        sessions, space={"train.optimizer.lr": {"log_uniform": [1e-3, 1.0]}}, method="random"
    )
    celery = make_celery(settings)
    assert sweep_once(sessions=sessions, celery=celery, settings=settings)["sweep_passes"] == 1
    assert redis_client.llen(QUEUE_SWEEPS) == 1
    message = json.loads(redis_client.lindex(QUEUE_SWEEPS, 0) or b"{}")
    assert (
        message["headers"]["task"] == SWEEP_TASK and str(sweep_id) in message["headers"]["argsrepr"]
    )
    # Stamped: the next sweep asks again only TRAINYARD_SWEEP_PASS_SECONDS later.
    assert sweep_once(sessions=sessions, celery=celery, settings=settings)["sweep_passes"] == 0
    with session_scope(sessions) as session:
        repository.get_sweep(session=session, sweep_id=sweep_id).status = SweepStatus.CANCELLED
        session.execute(update(Sweep).values(ticked_at=None))
    assert sweep_once(sessions=sessions, celery=celery, settings=settings)["sweep_passes"] == 0
