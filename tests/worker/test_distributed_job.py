"""Distributed jobs through the training task: the claiming worker spawns the ranks
(gloo on the CPU), rank 0 writes the rows, a killed rank fails the group and the job
resumes from its last checkpoint, a cancel stops every rank, no rank outlives its task."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.config import Settings
from shared.db import session_scope
from shared.models import Checkpoint, Job, LayerTrace, Metric, RankTrace
from shared.tensors import bytes_to_state_dict
from tests.shared.net.test_presets import Net
from tests.support.fixture_types import NewJob
from tests.support.jobs import job_outcome
from worker.shutdown import SHUTTING_DOWN
from worker.tasks import execute_train


def lenet(
    *, batch_size: int, world_size: int | None, per_rank: bool = False, **train: Any
) -> dict[str, Any]:
    """The seed's Net on the digits at 32 x 32 (1438 training samples)."""
    spec: dict[str, Any] = {
        "model": {"preset": "lenet"},
        "data": {"dataset": "digits", "image_size": 32},
        "train": {"batch_size": batch_size, "max_steps": 30, "seed": 5,
                  "optimizer": {"name": "Adam", "lr": 0.002}, **train},
        "hooks": {"every_n_steps": 5, "per_rank": per_rank},
    }  # fmt: skip
    if world_size is not None:
        spec["train"]["distributed"] = {"world_size": world_size}
    return spec


def mlp(**train: Any) -> dict[str, Any]:
    """A small MLP on the 8 x 8 digits over two ranks: many short steps, a checkpoint
    every 10."""
    return {
        "model": {"layers": [
            {"type": "Flatten"},
            {"type": "Linear", "in_features": 64, "out_features": 32}, {"type": "ReLU"},
            {"type": "Linear", "in_features": 32, "out_features": 10},
        ]},
        "data": {"dataset": "digits"},
        "train": {"batch_size": 8, "epochs": 6, "seed": 2, "checkpoint_every_steps": 10,
                  "optimizer": {"name": "SGD", "lr": 0.05}, "distributed": {"world_size": 2},
                  **train},
        "hooks": {"every_n_steps": 7},
    }  # fmt: skip


def rank_processes() -> list[int]:
    """This process's children that are spawned ranks (not the resource tracker)."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        state = stat.rsplit(")", 1)[1].split()[0]
        if parent == me and b"spawn_main" in cmdline and state != "Z":
            found.append(int(entry.name))
    return sorted(found)


def _losses(sessions: sessionmaker[Session], job_id: uuid.UUID) -> list[float]:
    with sessions() as session:
        return list(
            session.scalars(
                select(Metric.value)
                .where(Metric.job_id == job_id, Metric.split == "train", Metric.name == "loss")
                .order_by(Metric.step)
            )
        )


def test_a_two_process_job_trains_like_its_single_process_twin(
    sessions: sessionmaker[Session], settings: Settings, new_job: NewJob
) -> None:
    ddp = new_job(lenet(batch_size=16, world_size=2, per_rank=True)).id
    twin = new_job(lenet(batch_size=32, world_size=None)).id
    for job_id in (ddp, twin):
        assert execute_train(job_id, worker="w", sessions=sessions, settings=settings) == (
            "succeeded"
        )
    assert rank_processes() == []
    with sessions() as session:
        job = session.get(Job, ddp)
        assert job is not None and job.summary is not None
        summary = job.summary
        final = session.scalars(
            select(Checkpoint.model_state).where(
                Checkpoint.job_id == ddp, Checkpoint.tag == "final"
            )
        ).one()
        traces = {
            job_id: session.scalar(
                select(func.count()).select_from(LayerTrace).where(LayerTrace.job_id == job_id)
            )
            for job_id in (ddp, twin)
        }
        ranks = session.execute(
            select(RankTrace.rank, func.count()).where(RankTrace.job_id == ddp)
            .group_by(RankTrace.rank).order_by(RankTrace.rank)
        ).all()  # fmt: skip
    assert (summary["world_size"], summary["batch_size"], summary["global_batch_size"]) == (
        2, 16, 32
    )  # fmt: skip
    assert summary["steps"] == 30
    # One row per step from rank 0, and the same rows as the twin's: see
    # tests/worker/training/test_distributed_fit.py for the tolerance.
    mine, theirs = _losses(sessions, ddp), _losses(sessions, twin)
    assert len(mine) == len(theirs) == 30
    torch.testing.assert_close(torch.tensor(mine), torch.tensor(theirs), rtol=1e-5, atol=0)
    assert traces[ddp] == traces[twin] > 0
    # hooks.per_rank: the output gradients of both ranks' shares, as many rows each.
    assert [rank for rank, _ in ranks] == [0, 1] and ranks[0][1] == ranks[1][1] > 0
    Net().load_state_dict(bytes_to_state_dict(final), strict=True)


def _run_and_act(
    sessions: sessionmaker[Session],
    settings: Settings,
    job_id: uuid.UUID,
    ready: Callable[[Session], bool],
    act: Callable[[], None],
) -> str:
    """Run the task in a thread; once `ready` holds, `act`; the task's return value."""
    outcome: list[str] = []
    fast = settings.model_copy(update={"heartbeat_seconds": 0.05, "flush_seconds": 0.0})
    thread = threading.Thread(
        target=lambda: outcome.append(
            execute_train(job_id, worker="w1", sessions=sessions, settings=fast)
        )
    )
    thread.start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and thread.is_alive():
        with sessions() as session:
            if ready(session):
                break
        time.sleep(0.01)
    assert thread.is_alive(), f"the job ended before the test could act: {outcome}"
    act()
    thread.join(180)
    assert not thread.is_alive()
    return outcome[0]


def _has_checkpoint(job_id: uuid.UUID) -> Callable[[Session], bool]:
    def ready(session: Session) -> bool:
        ckpt = repository.latest_resumable(session=session, job_id=job_id)
        return ckpt is not None and ckpt.step >= 10

    return ready


def test_a_killed_rank_fails_the_group_and_the_job_resumes_from_its_checkpoint(
    sessions: sessionmaker[Session], settings: Settings, new_job: NewJob
) -> None:
    whole = new_job(mlp()).id
    assert execute_train(whole, worker="w", sessions=sessions, settings=settings) == "succeeded"
    job_id = new_job(mlp()).id

    def kill_rank_1() -> None:
        ranks = rank_processes()
        assert len(ranks) == 2, ranks
        os.kill(ranks[-1], signal.SIGKILL)  # the second started: rank 1

    result = _run_and_act(sessions, settings, job_id, _has_checkpoint(job_id), kill_rank_1)
    assert result == "requeued"
    assert rank_processes() == []  # rank 0 did not outlive the group
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert (job.status, job.attempt, job.worker) == ("queued", 1, None)  # a crash: used
        events = [e.message for e in repository.list_events(session=session, job_id=job_id)]
        resumable = repository.latest_resumable(session=session, job_id=job_id)
    assert any("rank 1 was killed by SIGKILL" in message for message in events), events
    assert resumable is not None
    assert execute_train(job_id, worker="w2", sessions=sessions, settings=settings) == (
        "succeeded"
    )
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.summary is not None
        assert job.summary["resumed_from_step"] == resumable.step > 0
    # Exact resume: every rank's generators and its place in the epoch came back.
    assert job_outcome(sessions, job_id) == job_outcome(sessions, whole)
    assert rank_processes() == []


def test_a_cancel_stops_every_rank(
    sessions: sessionmaker[Session], settings: Settings, new_job: NewJob
) -> None:
    job_id = new_job(mlp()).id

    def cancel() -> None:
        with session_scope(sessions) as session:
            repository.request_cancel(session=session, job_id=job_id)

    result = _run_and_act(sessions, settings, job_id, _has_checkpoint(job_id), cancel)
    assert result == "cancelled"
    assert rank_processes() == []
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.summary is not None
        assert job.status == "cancelled" and job.summary["stopped"] is True
        assert 10 <= job.summary["steps"] < 540


def test_a_spec_needing_more_processes_than_allowed_is_refused_at_submit(
    settings: Settings,
) -> None:
    from shared.errors import SpecError
    from shared.spec import JobSpec
    from shared.spec_check import SpecLimits, check_spec

    spec = JobSpec.model_validate(mlp(distributed={"world_size": 16}))
    with pytest.raises(SpecError, match=r"train\.distributed\.world_size is 16"):
        check_spec(spec, limits=SpecLimits.of(settings))


@pytest.mark.slow  # CI: test_preempt covers one process
def test_a_warm_shutdown_suspends_every_rank_and_the_job_resumes_exactly(
    sessions: sessionmaker[Session], settings: Settings, new_job: NewJob
) -> None:
    """SIGTERM to the worker (Celery's warm shutdown sets SHUTTING_DOWN): the ranks agree
    to suspend at the same step, rank 0 checkpoints, the job goes back to the queue with
    its attempt given back, and resumes as if never stopped."""
    whole = new_job(mlp()).id
    assert execute_train(whole, worker="w", sessions=sessions, settings=settings) == "succeeded"
    job_id = new_job(mlp()).id
    try:
        result = _run_and_act(
            sessions, settings, job_id, _has_checkpoint(job_id), SHUTTING_DOWN.set
        )
    finally:
        SHUTTING_DOWN.clear()
    assert result == "requeued"
    assert rank_processes() == []
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and (job.status, job.attempt) == ("queued", 0)
    assert execute_train(job_id, worker="w2", sessions=sessions, settings=settings) == (
        "succeeded"
    )
    assert job_outcome(sessions, job_id) == job_outcome(sessions, whole)
