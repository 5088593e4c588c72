"""A Callback that keeps everything fit() reports, for tests of the loop."""

from __future__ import annotations

import torch
from torch import nn

from worker.training.callbacks import Callback, FitResult
from worker.training.checkpoint import CheckpointBlob
from worker.training.probes import TraceRow


class Recorder(Callback):
    """Keeps everything fit() reports."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.calls: list[str] = []
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.traces: dict[int, list[TraceRow]] = {}
        self.epochs: list[tuple[int, int, dict[str, float]]] = []
        self.blobs: list[CheckpointBlob] = []
        self.total_steps = 0
        self.result: FitResult | None = None

    def on_fit_start(self, *, model: nn.Module, total_steps: int, device: torch.device) -> None:
        self.calls.append("fit_start")
        self.total_steps = total_steps

    def on_step_end(self, *, step: int, epoch: int, loss: float, traces: list[TraceRow]) -> None:
        self.steps.append(step)
        self.losses.append(loss)
        if traces:
            self.traces[step] = traces

    def on_epoch_end(self, *, step: int, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append((step, epoch, metrics))

    def on_checkpoint(self, *, blob: CheckpointBlob) -> None:
        self.blobs.append(blob)

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.steps) >= self.stop_after

    def on_fit_end(self, *, result: FitResult) -> None:
        self.calls.append("fit_end")
        self.result = result
