"""Resumable checkpoints: what a fit needs besides weights and optimizer state to go on
exactly where it stopped, and putting a run back into that state.

The state is taken at a step boundary: counters, the current epoch's losses, the LR
schedule, the GradScaler, early stopping, alert and non-finite bookkeeping, the training
loader's generator (as the epoch began) and every random generator (Python, NumPy, torch
CPU and each CUDA device). It is stored as `torch.save` bytes of plain values and tensors
and read back with `torch.load(weights_only=True)`: our own bytes, and nothing in them can
run code. A fit resumed from it takes the same steps with the same batches and the same
random draws as the fit that wrote it: on CPU its losses, metrics and final weights are
identical to an uninterrupted run's.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from worker.training.checkpoint import restore_model
from worker.training.data import ResumableSampler
from worker.training.progress import Progress
from worker.training.setup import Run

FORMAT = 1  # bump when the layout changes; an unknown format is not resumed


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """A resumable checkpoint as the worker read it back."""

    step: int
    model_state: bytes  # safetensors
    optimizer_state: bytes  # torch.save of optimizer.state_dict()
    resume_state: bytes  # resume_state() below
    best_model_state: bytes | None = None  # the "best" checkpoint's weights, if any


def resume_state(run: Run, progress: Progress) -> bytes | None:
    """The run's state at the step boundary it is at, as bytes. In a distributed job every
    rank calls it (each rank's own random generators go in); rank 0 gets the bytes, the
    other ranks None."""
    rank_rng = run.ranks.gather_rng(run.device)
    if not run.ranks.leads:
        return None
    scheduler = run.schedule.scheduler
    state: dict[str, Any] = {
        "format": FORMAT,
        "progress": {
            "step": progress.step,
            "epoch": progress.epoch,
            "epoch_step": progress.epoch_step,
            "epoch_losses": list(progress.epoch_losses),
            "loss": progress.loss,
            "metrics": dict(progress.metrics),
            "logged_lr": progress.logged_lr,
            "stopped_early": progress.stopped_early,
        },
        "epoch_start": progress.epoch_start,
        "loader_generator": _loader_generator(run).get_state(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": run.scaler.state_dict(),
        "early": _early_state(run),
        "skipped_in_a_row": run.guard.in_a_row,
        "alerts_seen": [list(key) for key in sorted(run.alerts.seen)],
        "alert_streaks": dict(run.alerts.streaks),
        "rng": _random_states(run.device),
        "rank_rng": rank_rng,  # None for one process; else each rank's torch generators
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def restore(run: Run, progress: Progress, point: ResumePoint) -> None:
    """Put a freshly prepared run back where `point` was taken."""
    state = torch.load(io.BytesIO(point.resume_state), map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT:
        raise ValueError(f"resume state format {state.get('format')!r} is not {FORMAT}")
    restore_model(run.model, point.model_state)
    optimizer_state = torch.load(
        io.BytesIO(point.optimizer_state), map_location="cpu", weights_only=True
    )
    run.optimizer.load_state_dict(optimizer_state)
    if state["scheduler"] is not None:
        assert run.schedule.scheduler is not None
        run.schedule.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    if state["early"] is not None and run.early is not None:
        run.early.best = state["early"]["best"]
        run.early.best_epoch = state["early"]["best_epoch"]
        run.early.bad_epochs = state["early"]["bad_epochs"]
    run.guard.in_a_row = state["skipped_in_a_row"]
    run.alerts.seen = {(kind, where, layer) for kind, where, layer in state["alerts_seen"]}
    run.alerts.streaks = dict(state.get("alert_streaks", {}))  # older checkpoints: none

    for name, value in state["progress"].items():
        setattr(progress, name, value)
    progress.first_step = progress.step
    progress.best_model_state = point.best_model_state
    progress.epoch_start = state["epoch_start"]
    generator = _loader_generator(run)
    assert isinstance(run.loader.sampler, ResumableSampler)
    if progress.epoch_step > 0:
        # Part-way into an epoch: draw its order again, skip what it already took.
        generator.set_state(progress.epoch_start)
        batches = progress.epoch_step * run.train.accumulate_steps
        run.loader.sampler.skip = batches * run.train.batch_size
    else:
        generator.set_state(state["loader_generator"])
    _set_random_states(state["rng"], run.device)
    rank_rng = state.get("rank_rng")
    if run.ranks.distributed:
        if rank_rng is None or len(rank_rng) != run.ranks.world_size:
            raise ValueError("the resume state was not taken with this job's world_size")
        run.ranks.set_rng(rank_rng[run.ranks.rank], run.device)


def _loader_generator(run: Run) -> torch.Generator:
    generator: torch.Generator | None = run.loader.generator
    assert generator is not None, "make_loader gives every loader its own generator"
    return generator


def _early_state(run: Run) -> dict[str, Any] | None:
    early = run.early
    if early is None:
        return None
    return {"best": early.best, "best_epoch": early.best_epoch, "bad_epochs": early.bad_epochs}


def _random_states(device: torch.device) -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    numpy = np.random.get_state(legacy=False)
    return {
        "python": [version, list(internal), gauss],
        "numpy": {
            "key": torch.from_numpy(numpy["state"]["key"].astype(np.int64)),
            "pos": int(numpy["state"]["pos"]),
            "has_gauss": int(numpy["has_gauss"]),
            "gauss": float(numpy["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
    }


def _set_random_states(states: dict[str, Any], device: torch.device) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = states["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": numpy["key"].numpy().astype(np.uint32), "pos": numpy["pos"]},
            "has_gauss": numpy["has_gauss"],
            "gauss": numpy["gauss"],
        }
    )
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state_all(states["cuda"])


@dataclass
class Cadence:
    """When a step takes a resumable checkpoint: every `every_steps` steps, and when
    `every_seconds` have passed since the last one (an epoch end counts)."""

    every_steps: int | None
    every_seconds: float | None
    clock: Callable[[], float]
    last: float = 0.0

    def __post_init__(self) -> None:
        self.last = self.clock()

    def due(self, step: int) -> bool:
        """Whether the step just taken should be checkpointed."""
        if self.every_steps is not None and step % self.every_steps == 0:
            return True
        return self.every_seconds is not None and self.clock() - self.last >= self.every_seconds

    def taken(self) -> None:
        """A resumable checkpoint was just taken."""
        self.last = self.clock()
