"""The wall-clock quota of a job (TRAINYARD_QUOTA_MAX_JOB_SECONDS): once a job has run
that long, counted from its first start so a resumed job does not start the clock over,
the fit stops at the next step boundary with a resumable checkpoint, and the worker
ends the job as failed saying so. The checkpoint stays: its weights can be used or a
new job can start from them."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from worker.training.callbacks import Callback


class TimeLimit(Callback):
    """Suspends the fit once `used_seconds` before it plus its own time reach the limit."""

    def __init__(
        self,
        *,
        limit_seconds: float,
        used_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit_seconds = limit_seconds
        self._used = used_seconds
        self._clock = clock
        self._start = clock()
        self.reached = False

    def on_fit_start(
        self, *, model: torch.nn.Module, total_steps: int, device: torch.device
    ) -> None:
        self._start = self._clock()

    def should_suspend(self) -> bool:
        if not self.reached:
            self.reached = self._used + self._clock() - self._start >= self.limit_seconds
        return self.reached

    def message(self) -> str:
        """The failed job's reason."""
        return (
            f"time limit of {self.limit_seconds:g} s reached (TRAINYARD_QUOTA_MAX_JOB_SECONDS); "
            "its last checkpoint is kept"
        )
