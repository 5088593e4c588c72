"""The task body and the DB sink on the real PostgreSQL, without Celery in the way."""

from __future__ import annotations

import errno
import threading
import time

import sqlalchemy.exc
import torch
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.db import session_scope
from shared.models import Checkpoint, Job, LayerTrace, Metric
from tests.support.fixture_types import ClaimedSink, CountRows, NewJob
from tests.support.specs import TINY
from worker.tasks import execute_train, user_message
from worker.training.probes import TraceRow


def test_sink_buffers_rows_until_the_flush_period(
    sessions: sessionmaker[Session],
    clean_db: None,
    settings: Settings,
    new_job: NewJob,
    count_rows: CountRows,
    claimed_sink: ClaimedSink,
) -> None:
    job_id = new_job(TINY).id
    sink, writer, now = claimed_sink(settings, job_id)
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
    assert writer.pending == 0 and count_rows(Metric, job_id) == 0  # ten steps, no hand-off
    now[0] = settings.flush_seconds
    sink.on_step_end(step=11, epoch=1, loss=0.1, traces=[])
    writer.flush()
    assert count_rows(Metric, job_id) == 11  # one batch with everything buffered
    assert count_rows(LayerTrace, job_id) == 10
    sink.close()


def _as_dict(row: TraceRow) -> dict[str, object]:
    return {f: getattr(row, f) for f in row.__slots__}


def test_execute_train_records_everything(
    sessions: sessionmaker[Session],
    clean_db: None,
    settings: Settings,
    new_job: NewJob,
    count_rows: CountRows,
) -> None:
    job_id = new_job({**TINY, "train": {**TINY["train"], "epochs": 2}}).id
    assert execute_train(job_id, worker="w", sessions=sessions, settings=settings) == "succeeded"
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "succeeded" and job.summary is not None
        assert job.summary["steps"] == 14 and job.progress_step == 14  # 2 x ceil(51 / 8)
    # per-step loss, epoch loss + val loss per epoch, and lr once (it never changed)
    assert count_rows(Metric, job_id) == 14 + 2 * 2 + 1
    assert count_rows(Checkpoint, job_id) == 3  # two epochs + final
    # Running the same message again changes nothing: the job is final.
    assert execute_train(job_id, worker="w2", sessions=sessions, settings=settings) == "skipped"


def test_worker_stops_when_its_lease_is_taken(
    sessions: sessionmaker[Session], clean_db: None, settings: Settings, new_job: NewJob
) -> None:
    fast = settings.model_copy(update={"heartbeat_seconds": 0.05})
    spec = {**TINY, "train": {**TINY["train"], "max_steps": 1_000_000}}
    job_id = new_job(spec).id
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
    sessions: sessionmaker[Session], clean_db: None, settings: Settings, new_job: NewJob
) -> None:
    job_id = new_job({**TINY, "model": {"preset": "retired"}}).id
    assert execute_train(job_id, worker="w", sessions=sessions, settings=settings) == "failed"
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.error is not None
        assert job.error.startswith(f"spec: job {job_id}'s spec no longer validates")


def test_failures_a_user_can_cause_say_what_to_do_in_one_line() -> None:
    cpu = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't allocate memory:"
        " you tried to allocate 81920000000 bytes. Error code 12 (Cannot allocate memory)"
    )
    assert user_message(cpu) == "out of memory on the worker: use a smaller model or batch_size"
    gpu = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    assert user_message(gpu) == "out of memory on the GPU: use a smaller model or batch_size"
    disk = OSError(errno.ENOSPC, "No space left on device")
    full = Exception("database or disk is full")
    sqlite = sqlalchemy.exc.OperationalError("INSERT ...", {}, full)
    for exc in (disk, sqlite):
        assert user_message(exc).startswith("disk full on the worker: ")
    assert "\n" not in user_message(RuntimeError("first line\nsecond line"))
