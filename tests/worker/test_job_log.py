"""A job's log lines as rows on the real PostgreSQL: what is kept, what stays in the
worker's own log (tracebacks, Celery's bookkeeping), the per-job cap across attempts, and
the stream's `logs` events over them."""

from __future__ import annotations

import logging
import time
import warnings

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.job_feed import EVENT_SETTLE_SECONDS, Cursor, read_feed
from shared.models import JobLog
from tests.support.fixture_types import NewJob
from worker.job_log import capture_job_log, record_line

train_log = logging.getLogger("worker.training.loop")


def _lines(sessions: sessionmaker[Session], job_id: object) -> list[JobLog]:
    with sessions() as session:
        return list(
            session.scalars(select(JobLog).where(JobLog.job_id == job_id).order_by(JobLog.id))
        )


def test_records_are_kept_and_an_error_shows_its_first_line_only(
    sessions: sessionmaker[Session], new_job: NewJob, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    job_id = new_job().id
    with capture_job_log(sessions, job_id, attempt=2, max_lines=100):
        train_log.info("epoch %d (step %d): %s", 1, 23, "train_loss 0.5")
        logging.getLogger("celery.redirected").warning("a print from the training code")
        logging.getLogger("celery.app.trace").info("Task trainyard.train succeeded")
        warnings.warn("a deprecated layer", UserWarning, stacklevel=1)
        train_log.debug("below INFO: not kept")
        try:
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied\n  at layer 3")
        except RuntimeError:
            logging.getLogger("worker.tasks").exception("job %s failed", job_id)
    rows = _lines(sessions, job_id)
    assert [(r.level, r.source) for r in rows] == [
        ("INFO", "worker.training.loop"),
        ("WARNING", "celery.redirected"),
        ("WARNING", "py.warnings"),
        ("ERROR", "worker.tasks"),
    ]
    assert rows[0].line == "epoch 1 (step 23): train_loss 0.5"
    assert "a deprecated layer" in rows[2].line
    assert rows[3].line == (
        f"job {job_id} failed: RuntimeError: mat1 and mat2 shapes cannot be multiplied"
    )
    assert all("Traceback" not in r.line and "at layer 3" not in r.line for r in rows)
    assert {r.attempt for r in rows} == {2}
    # The capture is gone with the block: later records are no job's.
    train_log.info("after the job")
    assert len(_lines(sessions, job_id)) == 4


def test_the_cap_counts_earlier_attempts_and_says_what_was_left_out(
    sessions: sessionmaker[Session], new_job: NewJob, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    job_id = new_job().id
    with capture_job_log(sessions, job_id, attempt=0, max_lines=3):
        for n in range(5):
            train_log.info("line %d", n)
    with capture_job_log(sessions, job_id, attempt=1, max_lines=3):
        train_log.info("a resumed run's line")
    lines = [r.line for r in _lines(sessions, job_id)]
    assert lines[:3] == ["line 0", "line 1", "line 2"]
    assert lines[3].startswith("2 more log lines are only in the worker's log")
    assert lines[4].startswith("1 more log lines")
    assert len(lines) == 5


def test_a_long_message_is_cut() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", ("y" * 5000,), None)
    assert len(record_line(record)) == 2001


def test_the_stream_sends_log_lines_once_each_after_their_cursor(
    sessions: sessionmaker[Session], new_job: NewJob, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    job_id = new_job().id
    with capture_job_log(sessions, job_id, attempt=0, max_lines=10):
        train_log.info("first")
        train_log.info("second")
    with sessions() as session:
        read = read_feed(session, job_id, Cursor())
    assert read is not None
    assert [i for i in read.items if i.kind == "logs"] == []  # the job runs: lines settle
    time.sleep(EVENT_SETTLE_SECONDS + 0.1)
    with sessions() as session:
        read = read_feed(session, job_id, Cursor())
        assert read is not None
        assert [i.data["line"] for i in read.items if i.kind == "logs"] == ["first", "second"]
        logs = [i for i in read.items if i.kind == "logs"]
        cursor = logs[0].cursor  # a client that saw only the first line
        again = read_feed(session, job_id, Cursor.parse(str(cursor)))
    assert again is not None
    assert [i.data["line"] for i in again.items if i.kind == "logs"] == ["second"]
