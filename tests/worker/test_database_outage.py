"""A database outage in the middle of training does not end the attempt: rows wait in
the writer, the heartbeat thread keeps trying, and the job ends in the same attempt
exactly as if nothing had happened. An outage longer than the window fails the job
with a reason the user can read."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.config import Settings
from shared.db import session_scope
from shared.db_retry import DatabaseGone
from shared.models import Job, Metric
from tests.support.fixture_types import CountRows, NewJob
from tests.support.jobs import job_outcome
from tests.support.servers import database_outage, database_outage_for
from tests.support.specs import TINY
from worker.lease_keeper import LeaseKeeper
from worker.tasks import execute_train
from worker.training import loop
from worker.writer import RowWriter

SPEC: dict[str, Any] = {
    "model": {"preset": "neural_network"},
    "data": {"dataset": "digits", "image_size": 28, "val_fraction": 0.2},
    "train": {"epochs": 2, "batch_size": 64, "checkpoint_every_steps": 5, "seed": 3},
    "hooks": {"every_n_steps": 4},
}  # fmt: skip


def _progress(sessions: sessionmaker[Session], job_id: uuid.UUID) -> int:
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.progress_step


def _wait_for_step(sessions: sessionmaker[Session], job_id: uuid.UUID, step: int) -> None:
    deadline = time.monotonic() + 120
    while _progress(sessions, job_id) < step:
        assert time.monotonic() < deadline, f"job {job_id} never reached step {step}"
        time.sleep(0.02)


def test_training_rides_through_an_outage_in_the_same_attempt(
    sessions: sessionmaker[Session],
    pg_url: str,
    settings: Settings,
    new_job: NewJob,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast = settings.model_copy(update={"heartbeat_seconds": 0.05, "flush_seconds": 0.0})
    whole = new_job(SPEC).id
    assert execute_train(whole, worker="w", sessions=sessions, settings=fast) == "succeeded"

    real_step = loop.train_step

    def slow_step(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.02)  # long enough to cut the database off part-way; changes no number
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", slow_step)
    job_id = new_job(SPEC).id
    outcome: list[str] = []
    worker = threading.Thread(
        target=lambda: outcome.append(
            execute_train(job_id, worker="w", sessions=sessions, settings=fast)
        )
    )
    worker.start()
    _wait_for_step(sessions, job_id, 6)
    with database_outage_for(pg_url, 3.0):
        pass
    worker.join(120)
    assert outcome == ["succeeded"]
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.attempt == 1
        events = [e.kind for e in repository.list_events(session=session, job_id=job_id)]
    assert "resumed" not in events and events.count("claimed") == 1
    assert job_outcome(sessions, job_id) == job_outcome(sessions, whole)


def test_rows_handed_over_during_an_outage_are_written_once_it_ends(
    sessions: sessionmaker[Session], pg_url: str, new_job: NewJob, count_rows: CountRows
) -> None:
    job_id = new_job(TINY).id
    rows = [{"split": "train", "name": "loss", "step": s, "epoch": 1, "value": 1.0} for s in
            range(1, 101)]  # fmt: skip
    with RowWriter(sessions=sessions, job_id=job_id, outage_seconds=60) as writer:
        with database_outage_for(pg_url, 1.5):
            writer.put("metrics", rows)
            time.sleep(0.3)
            assert writer.pending == 100  # still waiting: the database is away
        writer.flush()
    assert count_rows(Metric, job_id) == 100


@contextmanager
def _beating(
    sessions: sessionmaker[Session], job_id: uuid.UUID, settings: Settings, window: float
) -> Iterator[LeaseKeeper]:
    """The job claimed by "w", its heartbeat thread beating every 0.05 s."""
    with session_scope(sessions) as session:
        repository.claim_job(
            session=session, job_id=job_id, worker="w", lease_seconds=60, max_attempts=3
        )
    fast = settings.model_copy(update={"heartbeat_seconds": 0.05, "db_outage_seconds": window})
    keeper = LeaseKeeper(sessions=sessions, job_id=job_id, worker="w", settings=fast)
    keeper.start()
    try:
        yield keeper
    finally:
        keeper.stop()


def test_the_heartbeat_thread_keeps_the_lease_through_an_outage(
    sessions: sessionmaker[Session], pg_url: str, settings: Settings, new_job: NewJob
) -> None:
    job_id = new_job(TINY).id
    with _beating(sessions, job_id, settings, window=60) as keeper:
        keeper.report(step=3, total=10, epoch=1)
        with database_outage_for(pg_url, 1.5):
            keeper.report(step=7, total=10, epoch=1)  # the training thread goes on meanwhile
        _wait_for_step(sessions, job_id, 7)  # a beat after the outage stored it
        keeper.check()  # neither lost nor given up


def test_an_outage_longer_than_the_window_ends_the_attempt_with_a_reason(
    sessions: sessionmaker[Session], pg_url: str, settings: Settings, new_job: NewJob
) -> None:
    job_id = new_job(TINY).id
    with _beating(sessions, job_id, settings, window=0.3) as keeper:
        with database_outage(pg_url):
            deadline = time.monotonic() + 60
            while keeper.failure is None:
                assert time.monotonic() < deadline, "the heartbeat never gave up"
                time.sleep(0.05)
        with pytest.raises(DatabaseGone, match=r"unreachable for more than 0\.3 s"):
            keeper.check()
