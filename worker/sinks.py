"""Training callbacks that touch the outside world: batched DB writes, progress, cancel."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import Any

import torch
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.config import Settings
from shared.db import session_scope
from worker.training.checkpoint import CheckpointBlob
from worker.training.loop import Callback, FitResult
from worker.training.probes import TraceRow


class DatabaseSink(Callback):
    """Buffers metrics and trace rows and writes them in multi-row batches.

    Writes happen at most every `flush_seconds` (and at epoch ends, checkpoints and the
    end), so a step costs a list append, not a commit. The heartbeat that extends the
    job's lease also reads its cancel flag, which `should_stop` reports to the loop.
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        job_id: uuid.UUID,
        worker: str,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._job_id = job_id
        self._worker = worker
        self._settings = settings
        self._clock = clock
        self._metrics: list[dict[str, Any]] = []
        self._traces: list[dict[str, Any]] = []
        self._last_flush = self._last_beat = clock()
        self._step = 0
        self._epoch = 0
        self._total: int | None = None
        self._cancel = False

    def on_fit_start(
        self, *, model: torch.nn.Module, total_steps: int, device: torch.device
    ) -> None:
        self._total = total_steps
        self._heartbeat()

    def on_step_end(self, *, step: int, epoch: int, loss: float, traces: list[TraceRow]) -> None:
        self._step, self._epoch = step, epoch
        self._metrics.append(
            {"split": "train", "name": "loss", "step": step, "epoch": epoch, "value": loss}
        )
        for row in traces:
            self._traces.append(dataclasses.asdict(row))
        now = self._clock()
        if now - self._last_flush >= self._settings.flush_seconds:
            self.flush()
        if now - self._last_beat >= self._settings.heartbeat_seconds:
            self._heartbeat()

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
        self._heartbeat()

    def on_checkpoint(self, *, blob: CheckpointBlob) -> None:
        self.flush()
        with session_scope(self._sessions) as session:
            repository.save_checkpoint(
                session=session,
                job_id=self._job_id,
                step=blob.step,
                epoch=blob.epoch,
                tag=blob.tag,
                model_state=blob.model_state,
                optimizer_state=blob.optimizer_state,
                sha256=blob.sha256,
            )

    def should_stop(self) -> bool:
        return self._cancel

    def on_fit_end(self, *, result: FitResult) -> None:
        self.close()

    def close(self) -> None:
        """Write what is buffered and the last progress (also after a failure)."""
        self.flush()
        self._heartbeat()

    def flush(self) -> None:
        """Write buffered rows in one transaction (idempotent: duplicates are ignored)."""
        if not self._metrics and not self._traces:
            self._last_flush = self._clock()
            return
        metrics, traces = self._metrics, self._traces
        self._metrics, self._traces = [], []
        with session_scope(self._sessions) as session:
            repository.record_metrics(session=session, job_id=self._job_id, rows=metrics)
            repository.record_traces(session=session, job_id=self._job_id, rows=traces)
        self._last_flush = self._clock()

    def _heartbeat(self) -> None:
        with session_scope(self._sessions) as session:
            self._cancel = repository.heartbeat(
                session=session,
                job_id=self._job_id,
                worker=self._worker,
                lease_seconds=self._settings.lease_seconds,
                step=self._step,
                total=self._total,
                epoch=self._epoch,
            )
        self._last_beat = self._clock()
