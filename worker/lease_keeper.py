"""Keeping a running job's claim alive from a thread of its own.

The lease is short (TRAINYARD_LEASE_SECONDS, 20 s) so a dead worker's job is taken over
quickly. The heartbeat that extends it therefore cannot wait for the training thread:
one long step, a slow evaluation or a writer waiting out a database outage would let
the lease run out under a healthy job. A daemon thread beats every
`heartbeat_seconds` with the progress the training thread last reported, and reads
back the job's cancel and preempt flags.

While the database is unreachable the thread keeps trying (the lease is judged with
the database's clock, and the sweeper waits one lease after an outage before judging
leases, so a job whose heartbeats could not land is not taken away). The training
thread asks `check()` at each step: it raises LeaseLost once another worker holds the
job, and DatabaseGone once no beat has landed for TRAINYARD_DB_OUTAGE_SECONDS.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.config import Settings
from shared.db import session_scope
from shared.db_retry import DatabaseGone, is_transient, retry_database
from shared.errors import LeaseLost
from shared.repository.leases import Requests
from worker import activity

log = logging.getLogger(__name__)


class Lease(Protocol):
    """What a DatabaseSink needs of the job's claim: a LeaseKeeper, or on rank 0 of a
    distributed job the claiming worker's keeper seen through shared memory."""

    on_lost: Callable[[], None]

    @property
    def requests(self) -> Requests: ...

    def report(self, *, step: int, total: int | None, epoch: int) -> None: ...

    def check(self) -> None: ...

    def beat(self) -> None: ...


class Flag(Protocol):
    """A threading.Event as far as a reader is concerned."""

    def is_set(self) -> bool: ...


class LeaseKeeper:
    """Heartbeats for one claimed job: `start()` the thread, `report()` progress each step,
    `check()` for a lost claim, `beat()` to store progress now, `stop()` at the end."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        job_id: uuid.UUID,
        worker: str,
        settings: Settings,
        on_lost: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._job_id = job_id
        self._worker = worker
        self._settings = settings
        # Called once, from whichever thread saw the claim go (the sink stops its writer).
        self.on_lost = on_lost
        self._clock = clock
        self._lock = threading.Lock()  # one beat at a time (thread and training thread)
        self._progress: tuple[int, int | None, int] = (0, None, 0)  # step, total, epoch
        self.requests = Requests(cancel=False, preempt=False)
        self._failure: Exception | None = None
        self._last_landed = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def job_id(self) -> str:
        """The claimed job's id."""
        return str(self._job_id)

    @property
    def step(self) -> int:
        """The step the training thread last reported."""
        return self._progress[0]

    def start(self) -> None:
        """Beat every heartbeat_seconds from a daemon thread until stop()."""
        activity.job_started(self)
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{self._job_id}", daemon=True
        )
        self._thread.start()

    def report(self, *, step: int, total: int | None, epoch: int) -> None:
        """The progress the next beat stores (a tuple swap: no lock on the hot path)."""
        self._progress = (step, total, epoch)

    @property
    def failure(self) -> Exception | None:
        """What ended the claim (LeaseLost, DatabaseGone, ...), once something has."""
        return self._failure

    def check(self) -> None:
        """Raise what the thread saw: LeaseLost, or DatabaseGone after a long outage."""
        if self._failure is not None:
            raise self._failure

    def beat(self) -> None:
        """Extend the lease and store progress now, retrying through a database outage.

        Raises LeaseLost when the job is no longer this worker's, DatabaseGone when the
        database stays unreachable for the whole outage window.
        """
        self.check()
        try:
            retry_database(
                self._beat_once,
                what="extending the job's lease",
                window_seconds=self._settings.db_outage_seconds,
            )
        except (LeaseLost, DatabaseGone) as exc:
            self._fail(exc)
            raise

    def stop(self) -> None:
        """Stop the thread (a beat in flight completes)."""
        activity.job_ended(self)
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _beat_once(self) -> None:
        step, total, epoch = self._progress
        with self._lock, session_scope(self._sessions) as session:
            self.requests = repository.heartbeat(
                session=session,
                job_id=self._job_id,
                worker=self._worker,
                lease_seconds=self._settings.lease_seconds,
                step=step,
                total=total,
                epoch=epoch,
            )
        self._last_landed = self._clock()

    def _fail(self, exc: Exception) -> None:
        if self._failure is None:
            self._failure = exc
            if isinstance(exc, LeaseLost):
                self.on_lost()

    def _run(self) -> None:
        # A failed beat is tried again sooner than the period, so the lease is renewed
        # within a second or two of the database coming back.
        wait = self._settings.heartbeat_seconds
        while not self._stop.wait(wait):
            wait = self._settings.heartbeat_seconds
            try:
                self._beat_once()
            except LeaseLost as exc:
                self._fail(exc)
                return
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("job %s: heartbeat failed", self._job_id)
                    self._fail(exc)
                    return
                window = self._settings.db_outage_seconds
                if self._clock() - self._last_landed > window:
                    self._fail(DatabaseGone.after(window, what="extending the job's lease"))
                    return
                log.warning("job %s: heartbeat did not land (%s)", self._job_id, exc)
                wait = min(1.0, wait)
