"""A job's log lines as rows (job_logs), so its owner can read and stream them.

While a worker runs a job, every log record of the process at INFO or above (the loop's
epoch lines, warnings routed through logging, prints that Celery redirects to its
`celery.redirected` logger, errors) is kept as a row. A record with an exception keeps
its message and the exception's first line only: the traceback stays in the worker's own
log, where operators read it, and never reaches a client. Rows go to the database from a
thread of their own, in batches, so a log call in the training loop never waits for it.
"""

from __future__ import annotations

import logging
import threading
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from shared.db import session_scope
from shared.models import JobLog, utcnow

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.5
MAX_LINE_CHARS = 2000
# Celery's own bookkeeping (task received / succeeded) is not the job's; prints are.
IGNORED = ("celery", "kombu", "amqp")
KEPT = ("celery.redirected",)


def first_line(text: str) -> str:
    """The first non-empty line of `text`, cut to MAX_LINE_CHARS."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:MAX_LINE_CHARS]
    return ""


def record_line(record: logging.LogRecord) -> str:
    """What a client sees of a record: its message (cut), and of an exception only its
    type and first line."""
    message = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        message = f"{first_line(message)}: {type(exc).__name__}: {first_line(str(exc))}"
    elif len(message) > MAX_LINE_CHARS:
        message = message[:MAX_LINE_CHARS] + "…"
    return message


class JobLogHandler(logging.Handler):
    """Buffers the process's records as job_logs rows; a thread writes them in batches,
    up to `max_lines` rows per job (a resumed job counts the rows of its earlier runs),
    then one row saying how many more were left out."""

    def __init__(
        self, sessions: sessionmaker[Session], job_id: uuid.UUID, *, attempt: int, max_lines: int
    ) -> None:
        super().__init__(logging.INFO)
        self.sessions, self.job_id, self.attempt = sessions, job_id, attempt
        self.budget = max_lines
        self.dropped = 0
        self.pending: list[dict[str, object]] = []
        self.guard = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="job-log", daemon=True)

    def start(self) -> None:
        with self.sessions() as session:
            kept = session.scalar(
                select(func.count()).select_from(JobLog).where(JobLog.job_id == self.job_id)
            )
        self.budget = max(0, self.budget - int(kept or 0))
        self.thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        name = record.name
        if name.startswith(IGNORED) and not name.startswith(KEPT):
            return
        if record.name == __name__:
            return  # this module's own complaints would loop
        try:
            row = self._row(record)
        except Exception:
            self.handleError(record)
            return
        with self.guard:
            if self.budget <= 0:
                self.dropped += 1
                return
            self.budget -= 1
            self.pending.append(row)

    def _row(self, record: logging.LogRecord) -> dict[str, object]:
        at = datetime.fromtimestamp(record.created, tz=utcnow().tzinfo)
        return {
            "job_id": self.job_id, "at": at, "attempt": self.attempt,
            "level": record.levelname[:16], "source": record.name[:100],
            "line": record_line(record),
        }  # fmt: skip

    def stop(self) -> None:
        """Write what is left (and the count of lines left out), then end the thread."""
        self.stopping.set()
        self.thread.join(timeout=30)
        if self.dropped:
            self.pending.append(
                {"job_id": self.job_id, "at": utcnow(), "attempt": self.attempt,
                 "level": "WARNING", "source": __name__,
                 "line": f"{self.dropped} more log lines are only in the worker's log "
                         "(TRAINYARD_JOB_LOG_MAX_LINES)"}
            )  # fmt: skip
        self._flush()

    def _run(self) -> None:
        while not self.stopping.wait(FLUSH_SECONDS):
            self._flush()
        self._flush()

    def _flush(self) -> None:
        with self.guard:
            rows, self.pending = self.pending, []
        if not rows:
            return
        try:
            with session_scope(self.sessions) as session:
                session.execute(insert(JobLog), rows)
        except Exception as exc:  # the database is away: the lines stay in the worker's log
            log.warning("job %s: %d log lines not stored: %s", self.job_id, len(rows), exc)


@contextmanager
def capture_job_log(
    sessions: sessionmaker[Session], job_id: uuid.UUID, *, attempt: int, max_lines: int
) -> Iterator[None]:
    """Keep the process's log records as the job's rows while the block runs (one job at
    a time per worker process: the solo pool). Warnings go through logging meanwhile."""
    if max_lines <= 0:
        yield
        return
    handler = JobLogHandler(sessions, job_id, attempt=attempt, max_lines=max_lines)
    try:
        handler.start()
    except Exception as exc:  # no row budget known: run the job without its log rows
        log.warning("job %s: log lines not captured: %s", job_id, exc)
        yield
        return
    root = logging.getLogger()
    root.addHandler(handler)
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # each distinct warning once, as Python does
            yield
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        handler.stop()
