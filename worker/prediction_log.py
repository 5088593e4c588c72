"""Records of served predictions, written after the answers, in batches, off the
serving thread.

The serving thread hands each answered request over (`add` returns at once) and goes
on serving; a daemon thread writes what piled up every `flush_seconds`, in one
transaction (`repository.record_served`). A batch that fails is kept and written again:
while the database is unreachable it is retried with backoff for
TRAINYARD_DB_OUTAGE_SECONDS, and past that (or after another error) the thread waits and
tries again, a few times; then record by record, and only a record the database itself
refuses every time is left out (logged). The buffer is bounded:
when it is full, `add` waits, which pauses serving instead of growing without limit.
`on_done` hears of every record written (or left out): the serving journal in Redis
(worker/serving_journal.py) keeps each record until then, so a killed worker's records
are written by its next start or by another worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.db import session_scope
from shared.db_retry import DatabaseGone, retry_database
from shared.repository import ServedPrediction

log = logging.getLogger(__name__)

# A batch that failed for another reason than an outage is tried again after this long,
# _ATTEMPTS times in all.
_RETRY_PAUSE_SECONDS = 1.0
_ATTEMPTS = 5


class PredictionRecorder:
    """Buffers ServedPrediction records and writes them in batches on a thread of its own."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        flush_seconds: float,
        outage_seconds: float,
        max_buffered: int = 20_000,
        max_batch: int = 1_000,
        on_done: Callable[[list[ServedPrediction]], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._flush_seconds = flush_seconds
        self._outage_seconds = outage_seconds
        self._max_buffered = max_buffered
        self._max_batch = max_batch
        # Told of the records the database has (or refuses for good): the serving journal
        # forgets them.
        self._on_done = on_done or (lambda _records: None)
        self._buffer: deque[ServedPrediction] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._writing = 0  # records taken from the buffer, not yet committed
        self._flush_asked = False
        self.written = 0
        self.failed_batches = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)

    def start(self) -> PredictionRecorder:
        self._thread.start()
        return self

    def add(self, served: ServedPrediction) -> None:
        """Queue one record; waits only while the buffer is full (the database lags)."""
        with self._cond:
            while len(self._buffer) >= self._max_buffered and not self._closing:
                self._cond.wait(0.5)
            self._buffer.append(served)
            # The first record starts the flush period; a full batch ends it.
            if len(self._buffer) == 1 or len(self._buffer) >= self._max_batch:
                self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until everything added so far is written; False if `timeout` passed."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flush_asked = True
            self._cond.notify_all()
            while self._buffer or self._writing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self, timeout: float) -> None:
        """Write what is buffered (up to `timeout` seconds), then stop the thread."""
        if not self.flush(timeout):
            with self._cond:
                lost = len(self._buffer) + self._writing
            log.error("%d prediction records were not written before shutdown", lost)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=max(1.0, self._flush_seconds * 2))

    def _run(self) -> None:
        while True:
            with self._cond:
                self._wait_for_batch()
                if self._closing and not self._buffer:
                    return
                size = min(len(self._buffer), self._max_batch)
                batch = [self._buffer.popleft() for _ in range(size)]
                self._writing = len(batch)
                if not self._buffer:
                    self._flush_asked = False
            if batch:
                self._write(batch)
            with self._cond:
                self._writing = 0
                self._cond.notify_all()

    def _wait_for_batch(self) -> None:
        """(Holding the lock) until a flush period has passed since the oldest buffered
        record, a batch is full, or a flush or close is asked for."""
        due: float | None = None
        while not (self._closing or self._flush_asked):
            if not self._buffer:
                due = None
                self._cond.wait()  # add, flush and close notify
                continue
            now = time.monotonic()
            due = now + self._flush_seconds if due is None else due
            if now >= due or len(self._buffer) >= self._max_batch:
                return
            self._cond.wait(due - now)

    def _write(self, batch: list[ServedPrediction]) -> None:
        """Commit `batch`, retrying; a batch refused _ATTEMPTS times for another reason
        than an outage is written one record at a time, and a record still refused is
        logged and left out, so one bad record cannot hold up every later one."""
        attempt = 0
        while attempt < _ATTEMPTS:
            try:
                retry_database(
                    lambda: self._commit(batch),
                    what="recording predictions",
                    window_seconds=self._outage_seconds,
                )
                self.written += len(batch)
                self._on_done(batch)
                return
            except DatabaseGone:  # a long outage is no reason to drop anything: wait on
                self.failed_batches += 1
                log.error("the database is still unreachable; %d records wait", len(batch))
                if self._closing:
                    return
                time.sleep(_RETRY_PAUSE_SECONDS)
            except Exception:
                attempt += 1
                self.failed_batches += 1
                log.exception("could not record %d predictions (try %d)", len(batch), attempt)
                if self._closing:
                    return
                time.sleep(_RETRY_PAUSE_SECONDS)
        if len(batch) > 1:
            for one in batch:
                self._write([one])
            return
        self.dropped += 1
        log.error("left out the record of prediction %s: the database refuses it", batch[0].call.id)
        self._on_done(batch)

    def _commit(self, batch: list[ServedPrediction]) -> None:
        with session_scope(self._sessions) as session:
            repository.record_served(session=session, served=batch)
