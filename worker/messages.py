"""The one line a user reads when a job fails: what went wrong and what to do about it.
Tracebacks, SQL and host names stay in the worker log."""

from __future__ import annotations

import errno

import torch
from sqlalchemy.exc import SQLAlchemyError

from shared.errors import TrainyardError
from worker.training.diagnose import TrainingDiverged

# What allocators and storage say when they run out, across torch's CPU and CUDA paths.
OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "Cannot allocate memory")
DISK_FULL = ("No space left on device", "database or disk is full")


def user_message(exc: BaseException) -> str:
    """One line a user can act on; tracebacks stay in the worker log."""
    raw = str(exc)
    if isinstance(exc, TrainyardError | TrainingDiverged):
        text = str(exc.message if isinstance(exc, TrainyardError) else exc)
    elif isinstance(exc, MemoryError | torch.OutOfMemoryError) or any(
        words in raw for words in OUT_OF_MEMORY
    ):
        where = (
            "the GPU" if isinstance(exc, torch.OutOfMemoryError) or "CUDA" in raw else "the worker"
        )
        text = f"out of memory on {where}: use a smaller model or batch_size"
    elif (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or any(
        words in raw for words in DISK_FULL
    ):
        text = "disk full on the worker: free space where it writes (TRAINYARD_HOME, the database)"
    elif isinstance(exc, SQLAlchemyError):
        # Driver messages carry SQL, hosts and user names: keep them in the worker log.
        text = "the worker could not save results to the database; see the worker log"
    else:
        text = f"{type(exc).__name__}: {exc}"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:500]
