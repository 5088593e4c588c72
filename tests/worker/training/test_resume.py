"""Resumed fits equal uninterrupted ones, bit for bit on CPU.

A fit "dies" at a step (a callback raises there, as a SIGKILL would stop it), and a new
fit goes on from the newest resumable checkpoint the first one wrote. From that step on,
every loss, metric, learning rate and trace row, the final weights (sha256) and the test
score must be exactly those of a fit that was never interrupted.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from torch import nn

from shared.spec import JobSpec
from worker.training.callbacks import Callback, FitResult
from worker.training.checkpoint import CheckpointBlob
from worker.training.loop import fit
from worker.training.probes import TraceRow
from worker.training.resume import ResumePoint


class Died(Exception):
    """Stands for the process being killed."""


class Tape(Callback):
    """Everything a fit reports, by step; raises Died after step `die_at`."""

    def __init__(self, die_at: int | None = None) -> None:
        self.die_at = die_at
        self.losses: dict[int, float] = {}
        self.metrics: list[tuple[int, str, dict[str, float]]] = []
        self.traces: dict[int, list[tuple[str, str, float]]] = {}
        self.blobs: list[CheckpointBlob] = []
        self.total = 0
        self.result: FitResult | None = None

    def on_fit_start(self, *, model: nn.Module, total_steps: int, device: torch.device) -> None:
        self.total = total_steps

    def on_step_end(self, *, step: int, epoch: int, loss: float, traces: list[TraceRow]) -> None:
        self.losses[step] = loss
        if traces:
            self.traces[step] = [(r.layer, r.kind, r.norm) for r in traces]
        if step == self.die_at:
            raise Died(step)

    def on_metrics(self, *, step: int, epoch: int, split: str, values: dict[str, float]) -> None:
        self.metrics.append((step, split, values))

    def on_epoch_end(self, *, step: int, epoch: int, metrics: dict[str, float]) -> None:
        self.metrics.append((step, "epoch", metrics))

    def on_checkpoint(self, *, blob: CheckpointBlob) -> None:
        self.blobs.append(blob)

    def on_fit_end(self, *, result: FitResult) -> None:
        self.result = result

    def after(self, step: int) -> dict[str, Any]:
        """What was reported for the steps after `step`."""
        return {
            "losses": {s: v for s, v in self.losses.items() if s > step},
            "metrics": [m for m in self.metrics if m[0] > step],
            "traces": {s: t for s, t in self.traces.items() if s > step},
            "checkpoints": [(b.step, b.tag, b.sha256) for b in self.blobs if b.step > step],
        }


def point_from(tape: Tape) -> ResumePoint:
    """The newest resumable checkpoint a dead fit wrote, as the worker would read it."""
    last = max((b for b in tape.blobs if b.resume_state is not None), key=lambda b: b.step)
    best = [b for b in tape.blobs if b.tag == "best" and b.step <= last.step]
    assert last.resume_state is not None
    return ResumePoint(
        step=last.step,
        model_state=last.model_state,
        optimizer_state=last.optimizer_state,
        resume_state=last.resume_state,
        best_model_state=best[-1].model_state if best else None,
    )


def digits_job(**train: Any) -> JobSpec:
    """A small CNN with dropout on the digits (random crops when asked): RNG everywhere."""
    transforms = train.pop("transforms", [])
    return JobSpec.model_validate(
        {
            "model": {
                "layers": [
                    {"type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3},
                    {"type": "ReLU"},
                    {"type": "Dropout", "p": 0.3},
                    {"type": "Flatten"},
                    {"type": "Linear", "in_features": 144, "out_features": 10},
                ]
            },
            "data": {
                "dataset": "digits", "val_fraction": 0.1, "test_fraction": 0.1,
                "transforms": transforms,
            },
            "train": {"batch_size": 128, "seed": 7, **train},
            "hooks": {"every_n_steps": 4, "kinds": ["backward", "param_grad"]},
        }
    )  # fmt: skip


# 1437 training digits at batch 128: 12 batches an epoch. (spec, the step the first fit
# dies after, the step of the checkpoint it resumes from)
CASES = {
    "sgd, mid-epoch": (digits_job(epochs=3, checkpoint_every_steps=3,
                                  optimizer={"name": "SGD", "lr": 0.05, "momentum": 0.9}), 17, 15),
    "one-cycle, accumulation": (digits_job(  # 6 steps of 2 batches an epoch
        epochs=3, accumulate_steps=2, checkpoint_every_steps=2,
        scheduler={"name": "OneCycleLR", "max_lr": 0.05}), 9, 8),
    "workers, augmentation": (digits_job(
        epochs=2, num_workers=2, checkpoint_every_steps=4,
        transforms=[{"type": "RandomCrop", "size": 8, "padding": 1}]), 19, 16),
    "plateau, early stop, test on best": (digits_job(
        epochs=6, checkpoint_every_steps=5, optimizer={"name": "Adam", "lr": 0.3},
        scheduler={"name": "ReduceLROnPlateau", "monitor": "val_loss", "patience": 0},
        early_stopping={"monitor": "val_accuracy", "patience": 2}), 32, 30),
    "at an epoch boundary": (digits_job(epochs=3), 13, 12),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_a_resumed_fit_equals_an_uninterrupted_one(case: str) -> None:
    spec, die_at, resumes_at = CASES[case]
    whole = Tape()
    fit(spec, callbacks=[whole])
    assert whole.result is not None and die_at < whole.total

    dead = Tape(die_at=die_at)
    with pytest.raises(Died):
        fit(spec, callbacks=[dead])
    point = point_from(dead)
    assert point.step == resumes_at

    resumed = Tape()
    fit(spec, callbacks=[resumed], resume=point)
    assert resumed.result is not None
    assert resumed.after(point.step) == whole.after(point.step)
    assert min(resumed.losses) == point.step + 1  # it went on, it did not start over
    assert resumed.result.resumed_from_step == point.step
    timing = {"wall_s": 0.0, "steps_per_s": 0.0, "resumed_from_step": 0}
    final = dataclasses.replace(resumed.result, **timing)
    assert final == dataclasses.replace(whole.result, **timing)
    assert resumed.blobs[-1].sha256 == whole.blobs[-1].sha256  # the final weights


def test_resume_state_is_read_back_without_unpickling_code() -> None:
    spec, die_at, _ = CASES["sgd, mid-epoch"]
    dead = Tape(die_at=die_at)
    with pytest.raises(Died):
        fit(spec, callbacks=[dead])
    point = point_from(dead)
    # A resume state that would need to run code to load is refused, not executed.
    evil = dataclasses.replace(point, resume_state=_pickled_call())
    with pytest.raises(Exception, match="Weights only load failed"):
        fit(spec, resume=evil)


def _pickled_call() -> bytes:
    import io
    import pickle

    class Boom:
        def __reduce__(self) -> tuple[Any, ...]:
            return (print, ("this must never run",))

    buffer = io.BytesIO()
    pickle.dump({"format": 1, "x": Boom()}, buffer, protocol=2)
    return buffer.getvalue()


class SuspendAt(Tape):
    """Asks the fit to suspend (as a preemption would) after step `at`."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def should_suspend(self) -> bool:
        return max(self.losses, default=0) >= self.at


def test_a_suspended_fit_checkpoints_where_it_stops_and_resumes_exactly() -> None:
    spec, _, _ = CASES["one-cycle, accumulation"]
    whole = Tape()
    fit(spec, callbacks=[whole])
    suspended = SuspendAt(7)  # mid-epoch: 6 steps an epoch
    result = fit(spec, callbacks=[suspended])
    assert result.suspended and result.steps == 7
    assert [(b.step, b.tag) for b in suspended.blobs][-1] == (7, "step")  # no final one
    resumed = Tape()
    fit(spec, callbacks=[resumed], resume=point_from(suspended))
    assert resumed.after(7) == whole.after(7)
    assert resumed.blobs[-1].sha256 == whole.blobs[-1].sha256
