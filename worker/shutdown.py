"""A warm shutdown (SIGTERM: a redeploy, a preempted machine) as an event the training
loop sees at its next step: the job checkpoints and goes back to the queue.

A step can be long (a big batch, an evaluation), so the process does not wait for it
forever: TRAINYARD_SHUTDOWN_GRACE_SECONDS after the signal it exits anyway, and the job
is taken over from its last resumable checkpoint once its lease runs out.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from celery.signals import worker_shutting_down

from shared.config import get_settings

log = logging.getLogger(__name__)

# Set once the worker process starts shutting down; tests set and clear it themselves.
SHUTTING_DOWN = threading.Event()


class ExitDeadline:
    """Ends the process `seconds` after `arm()` unless `disarm()` comes first, after
    `last_words` (the running job's task sets them: hand the job back to the queue, so a
    slow step costs no attempt)."""

    def __init__(self) -> None:
        self._timer: threading.Timer | None = None
        self.last_words: Callable[[], None] | None = None

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def arm(self, seconds: float) -> None:
        if self._timer is None:
            self._timer = threading.Timer(seconds, self.exit_now, args=(seconds,))
            self._timer.daemon = True
            self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def exit_now(self, seconds: float, *, end: Callable[[int], object] | None = None) -> None:
        """Say the last words (errors are logged), then end the process."""
        words = self.last_words
        if words is not None:
            try:
                words()
            except Exception:
                log.exception("could not hand the running job back before exiting")
        log.error(
            "warm shutdown took over %gs (TRAINYARD_SHUTDOWN_GRACE_SECONDS); exiting", seconds
        )
        (end or _hard_exit)(1)


def _hard_exit(code: int) -> None:
    logging.shutdown()
    os._exit(code)  # Celery waits on the task's thread: only a hard exit keeps the promise


EXIT_DEADLINE = ExitDeadline()


def _on_worker_shutting_down(*_args: Any, **_kwargs: Any) -> None:
    # Runs in Celery's signal handler: set the flag (the loop does the rest), arm the
    # deadline.
    SHUTTING_DOWN.set()
    EXIT_DEADLINE.arm(get_settings().shutdown_grace_seconds)


worker_shutting_down.connect(_on_worker_shutting_down, weak=False)
