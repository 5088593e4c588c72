"""Helpers for tests that start servers as child processes."""

from __future__ import annotations

import ctypes
import signal
import socket
import sys

# Loaded here, not in the forked child: a child of a threaded parent must not import.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """`preexec_fn` of a child: SIGKILL it when the thread that started it dies, so a
    test runner killed by SIGKILL (no atexit, no fixture teardown) leaves no worker or API
    behind to steal the next run's messages. Survives exec; not inherited by forks
    (gunicorn's workers notice their master is gone); PostgreSQL, started by pg_ctl as
    another user, is not covered."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
