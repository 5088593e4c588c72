"""What fit() reports, and to whom: the Callback interface, its events and its result.

Everything that touches the outside world (database rows, progress, cancellation) is a
Callback, so the training code stays plain PyTorch and runs anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from worker.training.checkpoint import CheckpointBlob
from worker.training.probes import TraceRow


@dataclass
class Event:
    """A job event produced by training (kind, one-line message, structured data)."""

    kind: str
    message: str
    data: dict[str, object] = field(default_factory=dict)


@dataclass
class FitResult:
    """What a finished (or stopped) fit reports."""

    steps: int
    epochs: int
    final_loss: float
    metrics: dict[str, float]  # the last evaluated epoch's metrics (+ test_* at the end)
    wall_s: float
    steps_per_s: float
    param_count: int
    trainable_count: int
    stopped: bool  # a callback asked to stop (cancel)
    device: str
    stopped_early: bool = False  # early stopping ended training
    best_epoch: int | None = None
    resumed_from_step: int = 0  # where this fit began: a resumable checkpoint's step, or 0
    suspended: bool = False  # ended at a resumable checkpoint, to go on later


class Callback:
    """Hooks into fit(); every method is a no-op, override the ones you need."""

    def on_fit_start(self, *, model: nn.Module, total_steps: int, device: torch.device) -> None:
        """Called once, after the model is built and placed, before the first step."""

    def on_step_end(self, *, step: int, epoch: int, loss: float, traces: list[TraceRow]) -> None:
        """Called after every optimizer step; `traces` is empty on steps that are not logged.

        A step skipped for a non-finite loss reports that loss and the rows that located it.
        """

    def on_metrics(self, *, step: int, epoch: int, split: str, values: dict[str, float]) -> None:
        """Other scalars: the learning rate when it changes (split "train"), test metrics."""

    def on_epoch_end(self, *, step: int, epoch: int, metrics: dict[str, float]) -> None:
        """Called after each epoch's evaluation: train_loss, and val_loss / val_accuracy."""

    def on_checkpoint(self, *, blob: CheckpointBlob) -> None:
        """Each checkpoint: tag "epoch" after every epoch, "best" on improvement, "final"."""

    def should_stop(self) -> bool:
        """Polled once per step; True ends training early (FitResult.stopped)."""
        return False

    def should_suspend(self) -> bool:
        """Polled once per step; True takes a resumable checkpoint and ends the fit there,
        to be resumed later (FitResult.suspended): a preemption or a shutdown."""
        return False

    def on_event(self, *, event: Event) -> None:
        """Something a user should see in the job's events: an alert, a skipped step."""

    def on_fit_end(self, *, result: FitResult) -> None:
        """Called once after the final checkpoint; not called when fit raises."""

    def on_fit_error(self, *, error: BaseException) -> None:
        """Called once when fit raises (from setup on), before the error propagates.

        `error` may be an interrupt (KeyboardInterrupt, SystemExit): release what the
        callback holds then, and do not raise from here.
        """


class CallbackList(Callback):
    """Several callbacks as one: each call goes to every callback, in order."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)

    def on_fit_start(self, *, model: nn.Module, total_steps: int, device: torch.device) -> None:
        for cb in self.callbacks:
            cb.on_fit_start(model=model, total_steps=total_steps, device=device)

    def on_step_end(self, *, step: int, epoch: int, loss: float, traces: list[TraceRow]) -> None:
        for cb in self.callbacks:
            cb.on_step_end(step=step, epoch=epoch, loss=loss, traces=traces)

    def on_metrics(self, *, step: int, epoch: int, split: str, values: dict[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_metrics(step=step, epoch=epoch, split=split, values=values)

    def on_epoch_end(self, *, step: int, epoch: int, metrics: dict[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(step=step, epoch=epoch, metrics=metrics)

    def on_checkpoint(self, *, blob: CheckpointBlob) -> None:
        for cb in self.callbacks:
            cb.on_checkpoint(blob=blob)

    def should_stop(self) -> bool:
        return any(cb.should_stop() for cb in self.callbacks)

    def should_suspend(self) -> bool:
        return any(cb.should_suspend() for cb in self.callbacks)

    def on_event(self, *, event: Event) -> None:
        for cb in self.callbacks:
            cb.on_event(event=event)

    def on_fit_end(self, *, result: FitResult) -> None:
        for cb in self.callbacks:
            cb.on_fit_end(result=result)

    def on_fit_error(self, *, error: BaseException) -> None:
        for cb in self.callbacks:
            cb.on_fit_error(error=error)
