"""Child processes of a chaos cluster: start, signal, kill, wait for, read their logs.

Every child gets its own process group (a SIGKILL takes gunicorn's workers with their
master) and dies with the thread that started it, so even a test runner killed by
SIGKILL leaves no worker or API behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tests.support.processes import die_with_parent

# A loaded 2-core machine takes its time importing torch in four processes at once.
READY_TIMEOUT = float(os.environ.get("TRAINYARD_CHAOS_READY_TIMEOUT", "180"))

T = TypeVar("T")


class NotReady(RuntimeError):
    """A piece of the cluster did not come up (or a condition never held) in time."""


class CannotMount(RuntimeError):
    """A tmpfs could not be mounted here (not root, or no CAP_SYS_ADMIN)."""


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = READY_TIMEOUT, every: float = 0.1
) -> T:
    """Poll `probe` until it returns something other than None/False; raise naming `what`."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = probe()
            if value is not None and value is not False:
                return value
        except Exception as exc:  # not up yet: keep the reason for the message
            last_error = exc
        if time.monotonic() >= deadline:
            reason = (
                f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
            )
            raise NotReady(f"gave up after {timeout:.0f} s waiting for {what}{reason}")
        time.sleep(every)


@dataclass
class Proc:
    """A child process of the cluster, in its own process group, logging to a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int, *, group: bool = False) -> None:
        """Send `sig` to the process (or its whole group: gunicorn's workers too)."""
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(self.popen.pid, sig)
            else:
                self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the whole group and reap the process."""
        self.signal(signal.SIGKILL, group=True)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(30)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL what outlives `timeout`."""
        if self.alive():
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        self.kill()

    def has_logged(self, text: str) -> bool:
        """Whether `text` appears anywhere in the log so far."""
        try:
            return text.encode() in self.log.read_bytes()
        except OSError:
            return False

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def spawn(name: str, cmd: list[str], *, log: Path, env: dict[str, str], cwd: Path) -> Proc:
    """Start `cmd` in a process group of its own, its output in `log`."""
    with log.open("wb") as out:
        popen = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    return Proc(name, popen, log)
