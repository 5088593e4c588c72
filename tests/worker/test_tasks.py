"""The task body and the DB sink on the real PostgreSQL, without Celery in the way."""

from __future__ import annotations

import threading
import time
import uuid

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.config import Settings
from shared.db import session_scope
from shared.models import Checkpoint, Job, LayerTrace, Metric
from worker.sinks import DatabaseSink
from worker.tasks import execute_train
from worker.training.probes import TraceRow
from worker.writer import RowWriter

TINY = {
    "model": {"preset": "my_model"},
    "data": {"dataset": "synthetic", "task": "regression", "input_shape": [10], "size": 64},
    "train": {"loss": "MSELoss", "batch_size": 8},
}


def _job(sessions: sessionmaker[Session], spec: dict[str, object]) -> uuid.UUID:
    with session_scope(sessions) as session:
        job = repository.create_job(
            session=session, owner="o", kind="train", spec=spec, queue="train"
        )
        return job.id


def _count(sessions: sessionmaker[Session], model: type, job_id: uuid.UUID) -> int:
    with sessions() as session:
        return int(
            session.scalar(select(func.count()).select_from(model).where(model.job_id == job_id))
            or 0
        )


def claimed_sink(
    sessions: sessionmaker[Session], settings: Settings, job_id: uuid.UUID
) -> tuple[DatabaseSink, RowWriter, list[float]]:
    """Claim the job for worker "w" and build its sink on a clock the test moves (now[0])."""
    with session_scope(sessions) as session:
        repository.claim_job(
            session=session, job_id=job_id, worker="w", lease_seconds=60, max_attempts=3
        )
    now = [0.0]
    writer = RowWriter(sessions=sessions, job_id=job_id)
    sink = DatabaseSink(
        sessions=sessions,
        job_id=job_id,
        worker="w",
        settings=settings,
        clock=lambda: now[0],
        writer=writer,
    )
    return sink, writer, now


def test_sink_buffers_rows_until_the_flush_period(
    sessions: sessionmaker[Session], clean_db: None, settings: Settings
) -> None:
    job_id = _job(sessions, TINY)
    sink, writer, now = claimed_sink(sessions, settings, job_id)
    row = TraceRow(
        step=1,
        layer="fc1",
        kind="backward",
        numel=5,
        norm=1.0,
        mean=0.0,
        std=1.0,
        min=-1.0,
        max=1.0,
        zero_frac=0.0,
        nonfinite=0,
    )
    for step in range(1, 11):
        sink.on_step_end(
            step=step,
            epoch=1,
            loss=1.0 / step,
            traces=[TraceRow(**{**_as_dict(row), "step": step})],
        )
    writer.flush()  # whatever the writer was given is committed now
    assert writer.pending == 0 and _count(sessions, Metric, job_id) == 0  # ten steps, no hand-off
    now[0] = settings.flush_seconds
    sink.on_step_end(step=11, epoch=1, loss=0.1, traces=[])
    writer.flush()
    assert _count(sessions, Metric, job_id) == 11  # one batch with everything buffered
    assert _count(sessions, LayerTrace, job_id) == 10
    sink.close()


def _as_dict(row: TraceRow) -> dict[str, object]:
    return {f: getattr(row, f) for f in row.__slots__}


def test_execute_train_records_everything(
    sessions: sessionmaker[Session], clean_db: None, settings: Settings
) -> None:
    job_id = _job(sessions, {**TINY, "train": {**TINY["train"], "epochs": 2}})
    assert execute_train(job_id, worker="w", sessions=sessions, settings=settings) == "succeeded"
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "succeeded" and job.summary is not None
        assert job.summary["steps"] == 14 and job.progress_step == 14  # 2 x ceil(51 / 8)
    # per-step loss, epoch loss + val loss per epoch, and lr once (it never changed)
    assert _count(sessions, Metric, job_id) == 14 + 2 * 2 + 1
    assert _count(sessions, Checkpoint, job_id) == 3  # two epochs + final
    # Running the same message again changes nothing: the job is final.
    assert execute_train(job_id, worker="w2", sessions=sessions, settings=settings) == "skipped"


def test_worker_stops_when_its_lease_is_taken(
    sessions: sessionmaker[Session], clean_db: None, settings: Settings
) -> None:
    fast = settings.model_copy(update={"heartbeat_seconds": 0.05})
    spec = {**TINY, "train": {**TINY["train"], "max_steps": 1_000_000}}
    job_id = _job(sessions, spec)
    outcome: list[str] = []
    thread = threading.Thread(
        target=lambda: outcome.append(
            execute_train(job_id, worker="w1", sessions=sessions, settings=fast)
        )
    )
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with sessions() as session:
            job = session.get(Job, job_id)
            if job is not None and job.progress_step > 0:
                break
        time.sleep(0.05)
    with session_scope(sessions) as session:  # as if w1's lease expired and w2 claimed it
        session.execute(update(Job).where(Job.id == job_id).values(worker="w2", attempt=2))
    thread.join(timeout=60)
    assert outcome == ["lost"]
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "running" and job.worker == "w2"


def test_a_job_whose_stored_spec_no_longer_validates_fails_naming_it(
    sessions: sessionmaker[Session], clean_db: None, settings: Settings
) -> None:
    job_id = _job(sessions, {**TINY, "model": {"preset": "retired"}})
    assert execute_train(job_id, worker="w", sessions=sessions, settings=settings) == "failed"
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.error is not None
        assert job.error.startswith(f"spec: job {job_id}'s spec no longer validates")
