"""Jobs over two nodes: two workers (threads of this process, each with its own name and
its own rank process) form the job's gang through its row; a gang that cannot fill
releases its worker; killing one node's rank fails the gang and the job resumes."""

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
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.config import Settings
from shared.db import session_scope
from shared.models import Job
from tests.support.fixture_types import NewJob
from tests.support.jobs import job_outcome
from tests.support.specs import TINY
from tests.worker.test_distributed_job import mlp, rank_processes
from tests.worker.training.test_data_files import mnist_files
from worker.tasks import execute_train


@pytest.fixture()
def gang_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # One intra-op thread per rank in every layout: a rank alone on its node would take
    # every core, one of two ranks half of them, and a different thread count may round
    # a reduction differently, so "bit for bit the same as on one node" needs the same.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return settings.model_copy(
        update={"node_address": "127.0.0.1", "rendezvous_timeout": 60.0}
    )


def two_nodes() -> dict[str, Any]:
    return mlp(distributed={"world_size": 2, "nodes": 2})


def _workers(
    sessions: sessionmaker[Session],
    settings: Settings | dict[str, Settings],
    job_id: uuid.UUID,
    act: Callable[[], None] | None = None,
    ready: Callable[[Session], bool] | None = None,
    followers: tuple[str, ...] = ("w2",),
) -> dict[str, str]:
    """w1 claims the job and opens its gang; once it is open, the `followers` take their
    turns together and join. With `act`: called once `ready` holds. `settings` may differ
    by worker. Each worker's task result."""
    results: dict[str, str] = {}

    def run(worker: str) -> None:
        own = settings[worker] if isinstance(settings, dict) else settings
        results[worker] = execute_train(job_id, worker=worker, sessions=sessions, settings=own)

    first = threading.Thread(target=run, args=("w1",))
    first.start()
    _wait(sessions, lambda s: _job(s, job_id).gang_id is not None, "the gang to open")
    others = [threading.Thread(target=run, args=(name,)) for name in followers]
    for thread in others:
        thread.start()
    if act is not None and ready is not None:
        _wait(sessions, ready, "the job to be ready for the test's action")
        act()
    for thread in (first, *others):
        thread.join(240)
        assert not thread.is_alive()
    return results


def _job(session: Session, job_id: uuid.UUID) -> Job:
    job = session.get(Job, job_id)
    assert job is not None
    return job


def _wait(sessions: sessionmaker[Session], ready: Callable[[Session], bool], what: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with sessions() as session:
            if ready(session):
                return
        time.sleep(0.01)
    raise AssertionError(f"gave up after 120 s waiting for {what}")


def test_two_nodes_train_as_one_group(
    sessions: sessionmaker[Session], gang_settings: Settings, new_job: NewJob
) -> None:
    one_node = new_job(mlp()).id
    assert execute_train(one_node, worker="w", sessions=sessions, settings=gang_settings) == (
        "succeeded"
    )
    job_id = new_job(two_nodes()).id
    results = _workers(sessions, gang_settings, job_id)
    assert results == {"w1": "succeeded", "w2": "node 1"}
    assert rank_processes() == []
    with sessions() as session:
        job = _job(session, job_id)
        events = [e.message for e in repository.list_events(session=session, job_id=job_id)]
        assert job.summary is not None and job.summary["nodes"] == 2
        assert job.gang_id is None  # closed: nobody joins a finished job
    assert "w2 joined as node 1 of 2" in events
    # Rank 0 (node 0) wrote one row per step; the rows are those of the same two ranks on
    # one node, bit for bit (the same collectives in the same order).
    assert job_outcome(sessions, job_id) == job_outcome(sessions, one_node)


def test_a_gang_that_cannot_fill_gives_its_worker_back(
    sessions: sessionmaker[Session], gang_settings: Settings, new_job: NewJob
) -> None:
    short = gang_settings.model_copy(update={"rendezvous_timeout": 1.5})
    gang_job = new_job(two_nodes()).id
    started = time.monotonic()
    assert execute_train(gang_job, worker="w1", sessions=sessions, settings=short) == "waiting"
    assert time.monotonic() - started < 60
    with sessions() as session:
        job = _job(session, gang_job)
        assert (job.status, job.attempt, job.worker, job.gang_id) == ("queued", 0, None, None)
        assert job.not_before is not None
        assert job.started_at is None  # waiting for nodes is not running (the time quota)
        events = [e.message for e in repository.list_events(session=session, job_id=gang_job)]
    assert any("1 of 2 nodes joined within 1.5 s" in m for m in events), events
    # The only worker is free for other work: the gang job's next turn runs another job,
    # since the gang job is not claimable again before its wait is over.
    other = new_job(TINY).id
    assert execute_train(gang_job, worker="w1", sessions=sessions, settings=short) == (
        "succeeded"
    )
    with sessions() as session:
        assert _job(session, other).status == "succeeded"
        assert _job(session, gang_job).status == "queued"


@pytest.mark.slow  # CI: test_a_killed_rank_... covers the kill
def test_killing_a_node_fails_the_gang_and_the_job_resumes(
    sessions: sessionmaker[Session], gang_settings: Settings, new_job: NewJob
) -> None:
    whole = new_job(mlp()).id
    assert execute_train(whole, worker="w", sessions=sessions, settings=gang_settings) == (
        "succeeded"
    )
    job_id = new_job(two_nodes()).id

    def checkpointed(session: Session) -> bool:
        ckpt = repository.latest_resumable(session=session, job_id=job_id)
        return ckpt is not None and ckpt.step >= 10

    def kill_node_1() -> None:
        ranks = rank_processes()
        assert len(ranks) == 2, ranks
        os.kill(ranks[-1], signal.SIGKILL)  # w2's rank: node 1 started second

    fast = gang_settings.model_copy(update={"heartbeat_seconds": 0.05, "flush_seconds": 0.0})
    results = _workers(sessions, fast, job_id, act=kill_node_1, ready=checkpointed)
    assert results == {"w1": "requeued", "w2": "node 1"}
    assert rank_processes() == []
    with sessions() as session:
        job = _job(session, job_id)
        assert (job.status, job.attempt) == ("queued", 1)
        resumable = repository.latest_resumable(session=session, job_id=job_id)
    assert resumable is not None
    assert _workers(sessions, gang_settings, job_id) == {"w1": "succeeded", "w2": "node 1"}
    with sessions() as session:
        job = _job(session, job_id)
        assert job.summary is not None and job.summary["resumed_from_step"] == resumable.step
    assert job_outcome(sessions, job_id) == job_outcome(sessions, whole)


def test_a_cancel_while_the_gang_waits_cancels_the_job(
    sessions: sessionmaker[Session], gang_settings: Settings, new_job: NewJob
) -> None:
    job_id = new_job(two_nodes()).id
    results: list[str] = []
    thread = threading.Thread(
        target=lambda: results.append(
            execute_train(job_id, worker="w1", sessions=sessions, settings=gang_settings)
        )
    )
    thread.start()
    _wait(sessions, lambda s: _job(s, job_id).gang_id is not None, "the gang to open")
    with session_scope(sessions) as session:
        repository.request_cancel(session=session, job_id=job_id)
    thread.join(60)  # the heartbeat brings the request within a few seconds, not 60 s
    assert not thread.is_alive() and results == ["cancelled"]
    with sessions() as session:
        job = _job(session, job_id)
        assert (job.status, job.gang_id) == ("cancelled", None)


def test_three_nodes_called_at_once_all_find_their_seat(
    sessions: sessionmaker[Session], gang_settings: Settings, new_job: NewJob
) -> None:
    """The two workers that node 0 calls arrive together: each waits for the other's seat
    instead of passing the gang by."""
    job_id = new_job(mlp(epochs=1, distributed={"world_size": 3, "nodes": 3})).id
    results = _workers(sessions, gang_settings, job_id, followers=("w2", "w3"))
    assert results["w1"] == "succeeded"
    assert sorted((results["w2"], results["w3"])) == ["node 1", "node 2"]
    assert rank_processes() == []


def test_an_error_on_node_1_alone_fails_the_job_with_its_message(
    sessions: sessionmaker[Session], gang_settings: Settings, new_job: NewJob, tmp_path: Path
) -> None:
    """Node 1's worker lacks the job's data files: its rank fails on its own (node 0's
    rank only sees a peer go away), and the job fails with node 1's message, not as a
    crash to retry."""
    mnist_files(tmp_path / "node0", n_train=40, n_test=8)
    (tmp_path / "node1").mkdir()
    spec = {
        "model": {"layers": [{"type": "Flatten"},
                             {"type": "Linear", "in_features": 784, "out_features": 10}]},
        "data": {"dataset": "mnist"},
        "train": {"batch_size": 4, "distributed": {"world_size": 2, "nodes": 2}},
    }  # fmt: skip
    job_id = new_job(spec).id
    per_worker = {
        "w1": gang_settings.model_copy(update={"data_dir": tmp_path / "node0"}),
        "w2": gang_settings.model_copy(update={"data_dir": tmp_path / "node1"}),
    }
    results = _workers(sessions, per_worker, job_id)
    assert results == {"w1": "failed", "w2": "node 1"}
    with sessions() as session:
        job = _job(session, job_id)
        assert job.status == "failed" and job.attempt == 1
        assert job.error is not None and job.error.startswith("rank 1: "), job.error
        assert "TRAINYARD_DATA_DIR" in job.error or "MNIST" in job.error, job.error
    assert rank_processes() == []
