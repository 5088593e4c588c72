"""What this worker process is doing, for its presence record (worker/presence.py).

The training code registers its lease keeper and row writers here; the presence thread
reads them once per beat. Nothing here is on a step's path beyond what the keeper and
the writer already do (a reference kept at start, a counter bumped per committed batch).
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter
from collections.abc import Mapping
from typing import Protocol


class Progressing(Protocol):
    """A lease keeper as far as presence is concerned."""

    @property
    def job_id(self) -> str: ...

    @property
    def step(self) -> int: ...


class Backlogged(Protocol):
    """A row writer as far as presence is concerned."""

    @property
    def pending(self) -> int: ...


_lock = threading.Lock()
_keepers: weakref.WeakSet[Progressing] = weakref.WeakSet()
_writers: weakref.WeakSet[Backlogged] = weakref.WeakSet()
_committed: Counter[str] = Counter()
_training_tasks = 0  # train tasks running in this process (a gang's follower node too)


def job_started(keeper: Progressing) -> None:
    """A claimed job's heartbeat began."""
    with _lock:
        _keepers.add(keeper)


def job_ended(keeper: Progressing) -> None:
    """That job's heartbeat stopped."""
    with _lock:
        _keepers.discard(keeper)


def task_started() -> None:
    """A train task began (whatever it ends up running)."""
    global _training_tasks
    with _lock:
        _training_tasks += 1


def task_ended() -> None:
    """That train task returned or raised."""
    global _training_tasks
    with _lock:
        _training_tasks = max(0, _training_tasks - 1)


def training() -> bool:
    """Whether a train task runs in this process now."""
    with _lock:
        return _training_tasks > 0


def writer_opened(writer: Backlogged) -> None:
    """A row writer started (it is forgotten when it is garbage)."""
    with _lock:
        _writers.add(writer)


def rows_committed(counts: Mapping[str, int]) -> None:
    """A writer committed so many rows per table."""
    with _lock:
        _committed.update(counts)


def running_jobs() -> dict[str, int]:
    """job id -> the step it last reported, for every job this process runs."""
    with _lock:
        keepers = list(_keepers)
    return {keeper.job_id: keeper.step for keeper in keepers}


def writer_backlog() -> int:
    """Rows handed to this process's writers and not committed yet."""
    with _lock:
        writers = list(_writers)
    return sum(writer.pending for writer in writers)


def take_committed() -> Counter[str]:
    """Rows committed per table since the last call (the caller adds them up elsewhere)."""
    with _lock:
        taken = Counter(_committed)
        _committed.clear()
    return taken


def give_back_committed(counts: Counter[str]) -> None:
    """Counts taken whose report failed: reported with the next ones."""
    with _lock:
        _committed.update(counts)
