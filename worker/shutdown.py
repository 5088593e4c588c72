"""A warm shutdown (SIGTERM: a redeploy, a preempted machine) as an event the training
loop sees at its next step: the job checkpoints and goes back to the queue."""

from __future__ import annotations

import threading
from typing import Any

from celery.signals import worker_shutting_down

# Set once the worker process starts shutting down; tests set and clear it themselves.
SHUTTING_DOWN = threading.Event()


def _on_worker_shutting_down(*_args: Any, **_kwargs: Any) -> None:
    # Runs in Celery's signal handler: only set the flag, the loop does the rest.
    SHUTTING_DOWN.set()


worker_shutting_down.connect(_on_worker_shutting_down, weak=False)
