"""Riding through a database outage: retry what failed because the database was gone.

A worker's writes (rows, heartbeats, checkpoints, the final status) must survive a
database restart or a short network cut without ending the attempt: they are retried
with exponential backoff for up to `TRAINYARD_DB_OUTAGE_SECONDS`, then the job fails
with DatabaseGone, a message the user can act on. Every retried unit of work is one
transaction that is idempotent (a row already stored is skipped, an UPDATE sets
values), so doing it again after a failure halfway is safe.

Only errors that mean "the database could not be reached" are retried; a constraint
violation, a bad statement or a full disk fail at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import psycopg
import sqlalchemy.exc
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

from shared.errors import TrainyardError

log = logging.getLogger(__name__)

T = TypeVar("T")

# SQLite says so when its file cannot grow: retrying would only wait for the same answer.
_DISK_FULL = ("disk is full", "No space left on device")


class DatabaseGone(TrainyardError):
    """The database stayed unreachable for longer than the outage window."""

    status = 503
    code = "database_unavailable"

    @classmethod
    def after(cls, window_seconds: float, *, what: str) -> DatabaseGone:
        """The error for an outage that outlasted the window while doing `what`."""
        return cls(
            f"the database was unreachable for more than {window_seconds:g} s while {what} "
            "(TRAINYARD_DB_OUTAGE_SECONDS); resubmit the job once it is back"
        )


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached (down, restarting, cut off)."""
    if any(words in str(exc) for words in _DISK_FULL):
        return False
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    cause = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc
    if isinstance(cause, psycopg.OperationalError | psycopg.InterfaceError):
        return True  # refused, reset, admin shutdown, "the database system is starting up"
    if isinstance(exc, sqlalchemy.exc.OperationalError):
        return "database is locked" in str(exc)  # SQLite: another writer held it too long
    return isinstance(exc, sqlalchemy.exc.DisconnectionError | sqlalchemy.exc.TimeoutError)


def retry_database(
    work: Callable[[], T], *, what: str, window_seconds: float, max_wait: float = 2.0
) -> T:
    """Run `work`, retrying it while the database is unreachable, for `window_seconds`.

    `work` must be one whole transaction (open a session inside it), so each try starts
    clean. Raises DatabaseGone when the window runs out, other errors at once.
    """

    def note(state: RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        log.warning("database unreachable while %s (%s); retrying", what, type(error).__name__)

    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential(multiplier=0.1, max=max_wait),
        stop=stop_after_delay(window_seconds),
        before_sleep=note,
        reraise=True,
    )
    try:
        return retrying(work)
    except Exception as exc:
        if not is_transient(exc):
            raise
        raise DatabaseGone.after(window_seconds, what=what) from exc
