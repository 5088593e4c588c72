"""A bounded background writer: the training thread hands rows over and goes on training.

`RowWriter.put` appends rows to an in-memory buffer and returns at once; a daemon thread
drains the buffer and writes what has piled up in one transaction per batch. `put`
waits only while the buffer holds `max_rows` rows (the database is slower than the
loop produces rows), which bounds the memory a slow database can cost.

On PostgreSQL a batch is a binary COPY straight into the table inside a savepoint; if a
row already exists (a re-delivered job re-writes the steps it had written before) the
batch is redone through a temporary staging table and INSERT ... SELECT ... ON CONFLICT
DO NOTHING (`worker.pgcopy.copy_ignoring_duplicates`), and so is the rest of that job:
every write stays idempotent, and a first run writes at raw COPY speed
(bench/trace_write.py). On SQLite (the embedded default) a batch is the
multi-row INSERT ... ON CONFLICT DO NOTHING of `record_metrics` / `record_traces`.

While the database is unreachable (a restart, a network cut) a batch is retried with
backoff for up to `outage_seconds` (TRAINYARD_DB_OUTAGE_SECONDS); the buffer fills
meanwhile and then `put` waits, so the loop pauses instead of losing rows. Any other
failure, or an outage longer than that, stops the writer: the rows still buffered are
dropped and the error is raised in the training thread by the next `put`, `flush` or
`close`, so the job fails with a message instead of silently losing rows.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import psycopg
from sqlalchemy import Table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.db import session_scope
from shared.db_retry import DatabaseGone, retry_database
from shared.errors import TrainyardError
from shared.models import LayerTrace, Metric, RankTrace
from worker import activity
from worker.pgcopy import copy_ignoring_duplicates

log = logging.getLogger(__name__)

Row = Mapping[str, Any]
_SqliteWrite = Callable[..., None]

# table name -> (table, the multi-row INSERT used where COPY is not available)
TABLES: dict[str, tuple[Table, _SqliteWrite]] = {
    "metrics": (Metric.__table__, repository.record_metrics),  # type: ignore[dict-item]
    "layer_traces": (LayerTrace.__table__, repository.record_traces),  # type: ignore[dict-item]
    "rank_traces": (RankTrace.__table__, repository.record_rank_traces),  # type: ignore[dict-item]
}


class RowWriteError(TrainyardError):
    """The background writer could not store rows; the job fails with this message."""

    status = 500
    code = "write_failed"


class WriterFull(Exception):
    """`put(..., timeout=...)` gave up: the buffer stayed full for the whole timeout."""


class RowWriter:
    """Writes one job's metric and trace rows from a background thread, in batches.

    put(table, rows)  hand rows over; blocks only while `max_rows` rows are buffered
    flush()           wait until every row put so far is committed
    close()           drain everything, stop and join the thread
    abort()           drop what is buffered, stop and join the thread (the job was lost)

    Rows are mappings of column name to value without job_id (the writer adds it);
    the writer keeps references, so do not mutate rows after handing them over.
    Rows that already exist are skipped, so writing the same rows twice is a no-op.
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        job_id: uuid.UUID,
        max_rows: int = 200_000,
        batch_rows: int = 20_000,
        outage_seconds: float = 60.0,
        rollup_seconds: float = 30.0,
        keep_raw_steps: int | None = None,
        rolled_tables: frozenset[str] = frozenset({"metrics", "layer_traces"}),
    ) -> None:
        if max_rows < 1 or batch_rows < 1:
            raise ValueError("max_rows and batch_rows must be positive")
        self._sessions = sessions
        self._job_id = job_id
        self.max_rows = max_rows
        self.batch_rows = batch_rows
        self.outage_seconds = outage_seconds
        self._cond = threading.Condition()
        self._queue: deque[tuple[str, Sequence[Row]]] = deque()
        self._pending = 0  # rows put and not yet committed (buffered or being written)
        self._accepted = 0  # rows put, ever
        self._done = 0  # rows committed (or dropped after an error / abort), ever
        self._error: RowWriteError | None = None
        self._conflicts_seen = False  # written only by the writer thread
        self._closing = False
        self._aborted = False
        self._thread: threading.Thread | None = None
        # Rollups (shared/repository/rollups.py), written by this thread: every
        # rollup_seconds and at close, up to the last step committed.
        self.rollup_seconds = rollup_seconds
        self.keep_raw_steps = keep_raw_steps
        # The tables this job writes and rolls up: until each has committed rows, a
        # running job rolls nothing (the first traces may still be on their way).
        self.rolled_tables = rolled_tables
        # Per rolled-up table, the last step committed. Each table's rows come in step
        # order, but a hand-off puts metrics and traces separately: a batch may commit a
        # step's metrics before its traces, so the roll goes only as far as every table.
        self._committed: dict[str, int] = {}
        self._rolled_through = 0
        self._last_roll = time.monotonic()
        activity.writer_opened(self)

    @property
    def pending(self) -> int:
        """Rows handed over that are not committed yet."""
        with self._cond:
            return self._pending

    def put(self, table: str, rows: Sequence[Row], *, timeout: float | None = None) -> None:
        """Queue rows for `table` ("metrics", "layer_traces" or "rank_traces").

        Returns at once unless the buffer is full; then waits for room (at most `timeout`
        seconds, then WriterFull). Raises RowWriteError if an earlier batch failed.
        """
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; expected one of {sorted(TABLES)}")
        for start in range(0, len(rows), self.max_rows):  # a huge put waits chunk by chunk
            self._put_chunk(table, rows[start : start + self.max_rows], timeout)
        if not rows:
            with self._cond:
                self._raise_if_failed()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every row put so far is committed (TimeoutError after `timeout`)."""
        with self._cond:
            target = self._accepted
            if not self._cond.wait_for(lambda: self._done >= target, timeout):
                raise TimeoutError(f"row writer: {self._pending} rows still pending")
            self._raise_if_failed()

    def close(self) -> None:
        """Write everything buffered, then stop and join the thread; safe to call twice."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            self._raise_if_failed()

    def abort(self) -> None:
        """Drop the buffered rows and stop (the batch being written, if any, completes)."""
        with self._cond:
            self._closing = True
            self._aborted = True
            self._drop_queue()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        else:
            self.abort()

    # -- training thread -------------------------------------------------------------

    def _put_chunk(self, table: str, rows: Sequence[Row], timeout: float | None) -> None:
        with self._cond:
            self._raise_if_failed()
            if self._closing:
                raise RuntimeError("row writer is closed")

            def room() -> bool:
                fits = self._pending + len(rows) <= self.max_rows
                return self._error is not None or self._closing or fits

            if not self._cond.wait_for(room, timeout):
                raise WriterFull(f"row writer buffer full ({self._pending} rows pending)")
            self._raise_if_failed()
            if self._closing:  # aborted while waiting (the lease was lost): nobody writes now
                raise RuntimeError("row writer is closed")
            self._queue.append((table, rows))
            self._pending += len(rows)
            self._accepted += len(rows)
            if self._thread is None:  # started on first use: an unused writer costs nothing
                self._thread = threading.Thread(
                    target=self._run, name=f"row-writer-{self._job_id}", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _drop_queue(self) -> None:
        dropped = sum(len(rows) for _, rows in self._queue)
        self._queue.clear()
        self._pending -= dropped
        self._done += dropped

    # -- writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queue) or self._closing)
                if not self._queue:
                    aborted = self._aborted
                    break  # closing and drained
                batch = self._take_batch()
            count = sum(len(rows) for _, rows in batch)
            try:
                retry_database(
                    functools.partial(self._write, batch),
                    what=f"saving {count} metric and trace rows",
                    window_seconds=self.outage_seconds,
                )
            except BaseException as exc:
                log.error("job %s: row writer failed on %d rows", self._job_id, count, exc_info=exc)
                with self._cond:
                    self._error = _write_error(exc, batch)
                    self._done += count
                    self._pending -= count
                    self._drop_queue()
                    self._closing = True
                    self._cond.notify_all()
                return
            committed: Counter[str] = Counter()
            for table, rows in batch:
                committed[table] += len(rows)
            activity.rows_committed(committed)
            for table, last in _last_steps(batch, self.rolled_tables).items():
                self._committed[table] = max(self._committed.get(table, 0), last)
            with self._cond:
                self._done += count
                self._pending -= count
                self._cond.notify_all()
            if time.monotonic() - self._last_roll >= self.rollup_seconds:
                self._roll_up(final=False)
        if not aborted:
            self._roll_up(final=True)

    def _roll_up(self, *, final: bool) -> None:
        """Roll up what is committed. Never fails the job: rollups only speed up reads
        (a read falls back to the raw rows) and retention can wait for the next pass."""
        self._last_roll = time.monotonic()
        committed = self._committed
        if final:  # nothing more comes: a table that wrote nothing holds nothing back
            through = min((committed[t] for t in self.rolled_tables if t in committed), default=0)
        else:
            through = min(committed.get(t, 0) for t in self.rolled_tables)
        keep = self.keep_raw_steps
        if through <= self._rolled_through:
            return

        def roll() -> None:
            with session_scope(self._sessions) as session:
                repository.roll_up(
                    session=session, job_id=self._job_id, through_step=through,
                    keep_raw_steps=keep,
                )  # fmt: skip

        try:
            retry_database(roll, what="rolling up series", window_seconds=self.outage_seconds)
        except Exception:
            log.warning("job %s: could not roll up its series", self._job_id, exc_info=True)
            return
        self._rolled_through = through

    def _take_batch(self) -> list[tuple[str, Sequence[Row]]]:
        """Everything queued, up to about batch_rows rows (always at least one put)."""
        batch = [self._queue.popleft()]
        size = len(batch[0][1])
        while self._queue and size + len(self._queue[0][1]) <= self.batch_rows:
            table, rows = self._queue.popleft()
            size += len(rows)
            batch.append((table, rows))
        return batch

    def _write(self, batch: list[tuple[str, Sequence[Row]]]) -> None:
        """One transaction for the whole batch, one statement group per table."""
        by_table: dict[str, list[Row]] = {}
        for table, rows in batch:
            by_table.setdefault(table, []).extend(rows)
        with session_scope(self._sessions) as session:
            postgres = session.get_bind().dialect.name == "postgresql"
            for name, rows in by_table.items():
                target, insert = TABLES[name]
                if postgres:
                    # After one conflict (a re-delivered job re-writing its steps) the
                    # rest of the job goes straight to the staging path.
                    conflicted = copy_ignoring_duplicates(
                        session=session, table=target, job_id=self._job_id, rows=rows,
                        optimistic=not self._conflicts_seen,
                    )  # fmt: skip
                    self._conflicts_seen = self._conflicts_seen or conflicted
                else:
                    insert(session=session, job_id=self._job_id, rows=rows)


def _last_steps(batch: list[tuple[str, Sequence[Row]]], tables: frozenset[str]) -> dict[str, int]:
    """The last step each of `tables` commits in `batch`. A table's rows are put in step
    order, so once one is committed every earlier step of that table is too."""
    found: dict[str, int] = {}
    for table, rows in batch:
        if rows and table in tables:
            found[table] = max(found.get(table, 0), rows[-1]["step"])
    return found


def _write_error(exc: BaseException, batch: list[tuple[str, Sequence[Row]]]) -> RowWriteError:
    """A one-line message a user can read; the driver's text (SQL, hosts) stays in the log."""
    counts: dict[str, int] = {}
    for table, rows in batch:
        counts[table] = counts.get(table, 0) + len(rows)
    what = " and ".join(f"{n} {table} rows" for table, n in counts.items())
    if isinstance(exc, DatabaseGone):
        text = exc.message
    elif isinstance(exc, SQLAlchemyError | psycopg.Error):
        cause: Any = getattr(exc, "orig", None) or exc
        reason = type(cause).__name__
        constraint = getattr(getattr(cause, "diag", None), "constraint_name", None)
        if constraint:
            reason += f" on {constraint}"
        text = f"could not save {what} to the database ({reason}); see the worker log"
    else:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        text = f"could not save {what} to the database ({reason})"
    error = RowWriteError(text)
    error.__cause__ = exc
    return error
