"""Training callbacks that touch the outside world: batched DB writes, progress, cancel."""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.config import Settings
from shared.db import session_scope
from shared.db_retry import retry_database
from shared.errors import LeaseLost
from shared.jsonvalues import json_safe
from shared.models import LayerTrace, RankTrace
from worker.lease_keeper import Flag, Lease, LeaseKeeper
from worker.shutdown import SHUTTING_DOWN
from worker.training.callbacks import Callback, Event, FitResult
from worker.training.checkpoint import CheckpointBlob
from worker.training.probes import TraceRow
from worker.writer import RowWriter

log = logging.getLogger(__name__)

T = TypeVar("T")


class DatabaseSink(Callback):
    """Buffers metrics and trace rows and hands them to a background RowWriter.

    Every `flush_seconds` (and at epoch ends, checkpoints and the end) the step's buffer
    goes to the writer, which commits it off the training thread; a step costs a list
    append, and a hand-off waits only when the writer's bounded buffer is full. Epoch
    ends, checkpoints and close wait until the rows are committed, so what the API shows
    at an epoch boundary is complete. The heartbeat that extends the job's lease (a
    LeaseKeeper thread, every `heartbeat_seconds`) also reads its cancel and preempt
    flags, which `should_stop` / `should_suspend` report to the loop (a warm shutdown of
    the worker, `shutting_down`, suspends too); a lost lease raises LeaseLost at the next
    step and drops the rows not yet written (another worker owns the job now). Every
    write rides through a database outage of up to `db_outage_seconds`.
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        job_id: uuid.UUID,
        worker: str,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        writer: RowWriter | None = None,
        lease: Lease | None = None,
        shutting_down: Flag = SHUTTING_DOWN,
        keep_raw_steps: int | None = None,
        traced: bool = True,
    ) -> None:
        self._sessions = sessions
        self._job_id = job_id
        self._worker = worker
        self._settings = settings
        self._clock = clock
        self._writer = writer or RowWriter(
            sessions=sessions,
            job_id=job_id,
            outage_seconds=settings.db_outage_seconds,
            rollup_seconds=settings.rollup_seconds,
            keep_raw_steps=keep_raw_steps,
            rolled_tables=frozenset({"metrics", "layer_traces"} if traced else {"metrics"}),
        )
        # The task runs the job's heartbeat thread from the claim until the outcome is
        # stored (setup and the final writes are covered too); a sink on its own (tests,
        # benchmarks) beats only at the fit's start, epoch ends and close.
        self._lease: Lease = lease or LeaseKeeper(
            sessions=sessions, job_id=job_id, worker=worker, settings=settings
        )
        self._lease.on_lost = self._writer.abort  # another worker's now; stop writing for it
        self._metrics: list[dict[str, Any]] = []
        self._traces: list[dict[str, Any]] = []
        self._rank_traces: list[dict[str, Any]] = []
        self._last_flush = clock()
        self._total: int | None = None
        self._shutting_down = shutting_down

    def on_fit_start(
        self, *, model: torch.nn.Module, total_steps: int, device: torch.device
    ) -> None:
        self._total = total_steps
        self._lease.report(step=0, total=total_steps, epoch=0)
        self._lease.beat()

    def on_step_end(self, *, step: int, epoch: int, loss: float, traces: list[TraceRow]) -> None:
        self._lease.check()  # LeaseLost / DatabaseGone seen by the heartbeat thread
        self._lease.report(step=step, total=self._total, epoch=epoch)
        self._metrics.append(
            {"split": "train", "name": "loss", "step": step, "epoch": epoch, "value": loss}
        )
        if traces and traces[-1].rank is not None:  # hooks.per_rank: those rows come last
            self._rank_traces.extend(_row_dict(r, RankTrace) for r in traces if r.rank is not None)
            traces = [r for r in traces if r.rank is None]
        self._traces.extend(map(_row_dict, traces))
        now = self._clock()
        if now - self._last_flush >= self._settings.flush_seconds:
            self._hand_off()

    def on_metrics(self, *, step: int, epoch: int, split: str, values: dict[str, float]) -> None:
        for name, value in values.items():
            row = {"split": split, "name": name, "step": step, "epoch": epoch, "value": value}
            self._metrics.append(row)

    def on_epoch_end(self, *, step: int, epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            split, _, name = key.partition("_")  # "val_accuracy" -> ("val", "accuracy")
            if split == "train":
                name = f"epoch_{name}"  # per-step "train/loss" already exists at this step
            row = {"split": split, "name": name, "step": step, "epoch": epoch, "value": value}
            self._metrics.append(row)
        self.flush()
        self._lease.beat()  # progress at the epoch boundary, at once

    def on_checkpoint(self, *, blob: CheckpointBlob) -> None:
        self._lease.check()
        self.flush()
        self._retrying(f"saving the step {blob.step} checkpoint", self._save_checkpoint, blob)

    def _save_checkpoint(self, blob: CheckpointBlob) -> None:
        with session_scope(self._sessions) as session:
            # In the checkpoint's transaction: a worker that lost the job writes none.
            repository.assert_held(session=session, job_id=self._job_id, worker=self._worker)
            repository.save_checkpoint(
                session=session,
                job_id=self._job_id,
                step=blob.step,
                epoch=blob.epoch,
                tag=blob.tag,
                model_state=blob.model_state,
                optimizer_state=blob.optimizer_state,
                sha256=blob.sha256,
                resume_state=blob.resume_state,
                keep_resumable=self._settings.keep_checkpoints,
            )

    def should_stop(self) -> bool:
        return self._lease.requests.cancel

    def should_suspend(self) -> bool:
        # The shutdown flag is read every step (a redeploy waits on it); a preempt request
        # arrives with the next heartbeat.
        return self._lease.requests.preempt or self._shutting_down.is_set()

    @property
    def preempted(self) -> bool:
        """Whether a user asked to preempt the job (else a suspension is a shutdown)."""
        return self._lease.requests.preempt

    def on_event(self, *, event: Event) -> None:
        # Alerts and skipped steps are rare: written at once, where the API lists events.
        self._retrying(f"saving a {event.kind} event", self._save_event, event)

    def _save_event(self, event: Event) -> None:
        with session_scope(self._sessions) as session:
            repository.add_event(
                session=session,
                job_id=self._job_id,
                kind=event.kind,
                message=event.message,
                data=json_safe(event.data),
            )

    def on_fit_end(self, *, result: FitResult) -> None:
        self.close()

    def on_fit_error(self, *, error: BaseException) -> None:
        if isinstance(error, LeaseLost):
            return  # the heartbeat stopped the writer: the job is another worker's now
        if not isinstance(error, Exception):
            # KeyboardInterrupt / SystemExit in the long-lived worker: no writer thread may
            # outlive the job; the lease runs out and the sweeper re-sends it.
            self.abort()
            return
        try:
            self.close()  # keep the points and progress logged before the failure
        except Exception:
            log.exception("job %s: could not write buffered rows", self._job_id)

    def close(self) -> None:
        """Write what is buffered, stop the writer, store the last progress (also after a failure).

        Raises RowWriteError when the writer failed: the job must not succeed with rows missing.
        """
        try:
            self._hand_off()
        finally:
            self._writer.close()  # joins the writer thread even when the hand-off raised
        self._lease.beat()

    def abort(self) -> None:
        """Stop the writer thread without writing more (the job ended some other way)."""
        self._writer.abort()

    def flush(self) -> None:
        """Hand buffered rows to the writer and wait until everything is committed."""
        self._hand_off()
        self._writer.flush()

    def _hand_off(self) -> None:
        """Give the buffered rows to the writer (idempotent writes: duplicates are ignored)."""
        metrics, traces, rank_traces = self._metrics, self._traces, self._rank_traces
        self._metrics, self._traces, self._rank_traces = [], [], []
        if metrics:
            self._writer.put("metrics", metrics)
        if traces:
            self._writer.put("layer_traces", traces)
        if rank_traces:
            self._writer.put("rank_traces", rank_traces)
        self._last_flush = self._clock()

    def _retrying(self, what: str, work: Callable[[T], None], arg: T) -> None:
        retry_database(
            lambda: work(arg), what=what, window_seconds=self._settings.db_outage_seconds
        )


_FIELDS: dict[tuple[type, type], tuple[str, ...]] = {}


def _row_dict(row: TraceRow, table: type[LayerTrace | RankTrace] = LayerTrace) -> dict[str, Any]:
    """A trace row's stored fields as {column: value}, cheaper than dataclasses.asdict.

    Fields that are not columns of `table` (such as the in-step capture order) stay in
    memory only.
    """
    names = _FIELDS.get((type(row), table))
    if names is None:
        columns = frozenset(table.__table__.columns.keys())
        fields = (field.name for field in dataclasses.fields(row))
        names = _FIELDS[(type(row), table)] = tuple(name for name in fields if name in columns)
    return {name: getattr(row, name) for name in names}
