"""Shared memory between a worker that claimed a distributed job and its rank processes.

The claiming worker keeps the job's lease (its heartbeat thread, as for any job) and
relays through this channel: progress comes up from rank 0, the job's cancel / preempt
flags, the node's shutdown (SIGTERM, the time limit) and a lost claim go down to the
ranks. Rank 0's DatabaseSink reads them through `ChannelLease` as it reads a LeaseKeeper;
the other ranks through `NodeAsks`. Plain integers in shared memory: no pickling, no
locks on a rank's hot path (each value has one writer).
"""

from __future__ import annotations

from collections.abc import Callable
from multiprocessing.context import SpawnContext
from typing import Any

from shared.errors import LeaseLost
from shared.repository.leases import Requests
from worker.training.callbacks import Callback

_CANCEL, _PREEMPT, _SHUTDOWN, _LOST = range(4)


class RankChannel:
    """Progress (step, total, epoch) up, flags (cancel, preempt, shutdown, lost) down."""

    def __init__(self, ctx: SpawnContext) -> None:
        self._progress: Any = ctx.RawArray("q", [0, -1, 0])  # no total before the fit starts
        self._flags: Any = ctx.RawArray("b", 4)

    # --- the claiming worker's side ---------------------------------------------

    def send(self, *, cancel: bool, preempt: bool, shutdown: bool, lost: bool) -> None:
        """The job's flags as the worker last read them."""
        for index, value in ((_CANCEL, cancel), (_PREEMPT, preempt), (_SHUTDOWN, shutdown),
                             (_LOST, lost)):  # fmt: skip
            self._flags[index] = int(value)

    def progress(self) -> tuple[int, int | None, int]:
        """Rank 0's last progress: step, total steps (None before the fit starts), epoch."""
        step, total, epoch = self._progress[:]
        return int(step), (int(total) if total >= 0 else None), int(epoch)

    # --- the ranks' side ----------------------------------------------------------

    def report(self, *, step: int, total: int | None, epoch: int) -> None:
        self._progress[0], self._progress[2] = step, epoch
        self._progress[1] = total if total is not None else -1

    def flag(self, index: int) -> bool:
        return bool(self._flags[index])

    @property
    def cancel(self) -> bool:
        return self.flag(_CANCEL)

    @property
    def preempt(self) -> bool:
        return self.flag(_PREEMPT)

    @property
    def shutdown(self) -> bool:
        return self.flag(_SHUTDOWN)

    @property
    def lost(self) -> bool:
        return self.flag(_LOST)


class ChannelLease:
    """What DatabaseSink needs of a lease, on rank 0: the claiming worker beats."""

    def __init__(self, channel: RankChannel, job_id: object) -> None:
        self._channel = channel
        self._job_id = job_id
        self.on_lost: Callable[[], None] = lambda: None

    @property
    def requests(self) -> Requests:
        return Requests(cancel=self._channel.cancel, preempt=self._channel.preempt)

    def report(self, *, step: int, total: int | None, epoch: int) -> None:
        self._channel.report(step=step, total=total, epoch=epoch)

    def check(self) -> None:
        if self._channel.lost:
            self.on_lost()
            raise LeaseLost(f"job {self._job_id}: its worker lost the claim")

    def beat(self) -> None:
        """The claiming worker beats every heartbeat period with the progress reported."""
        self.check()


class ShutdownFlag:
    """The node's shutdown as a threading.Event-like flag (DatabaseSink reads is_set)."""

    def __init__(self, channel: RankChannel) -> None:
        self._channel = channel

    def is_set(self) -> bool:
        return self._channel.shutdown


class NodeAsks(Callback):
    """A rank other than 0: asks to suspend when its node shuts down, to stop when the
    claim is lost (every rank agrees on what any rank asks)."""

    def __init__(self, channel: RankChannel) -> None:
        self._channel = channel

    def should_stop(self) -> bool:
        return self._channel.lost

    def should_suspend(self) -> bool:
        return self._channel.shutdown
