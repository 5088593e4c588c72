"""One optimizer step of the seed's loop: zero_grad, forward, loss, backward, step.

Micro-batches of a step add their gradients before the one update (as in the notes'
loop, called `accumulate_steps` times); hooks record the last micro-batch's backward and
the summed gradients. A non-finite loss is located and the step undone (diagnose.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from shared.spec import TrainSpec
from worker.training.diagnose import (
    Batch,
    Replay,
    first_nonfinite,
    nonfinite_message,
    replay_step,
)
from worker.training.optim import current_lr
from worker.training.probes import HookRecorder, TraceRow
from worker.training.ranks import Asks
from worker.training.setup import Loader, Run


@dataclass(frozen=True, slots=True)
class StepResult:
    """What a step did: its loss, its trace rows (empty when not logged) and its rate."""

    loss: float
    traces: list[TraceRow]
    lr: float  # the learning rate the update used; NaN when the step was undone
    problem: str | None = None  # a non-finite loss: where it started; the step was undone
    asks: Asks | None = None  # a distributed job: what the ranks agreed on during the step


def train_step(
    run: Run, batches: list[Batch], step: int, poll: Callable[[], Asks] | None = None
) -> StepResult:
    """zero_grad, forward and backward over the micro-batches, clip, optimizer step.

    In a distributed job `poll` (the callbacks' asks) is called before the update and
    the ranks agree on its answers together with the loss; StepResult.asks has them.
    """
    run.optimizer.zero_grad()
    replay = run.guard.remember(run.model, run.device)  # to re-run or undo a bad step
    total = forward_backward(run, batches, step)
    run.scaler.unscale_(run.optimizer)  # param_grad traces and clipping see true gradients
    # The step's one host sync, before the update; in a distributed job the mean over
    # the ranks, so every rank takes (or undoes) the step alike.
    loss, asks = run.ranks.step_sync(total, poll)
    if not math.isfinite(loss):
        return dataclasses.replace(_undo(run, batches, step, loss, replay), asks=asks)
    run.recorder.after_backward()
    clip_gradients(run.model, run.train)
    lr = current_lr(run.optimizer)  # the rate this step uses
    scale = run.loss_scale()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    # fp16: a step with inf/NaN gradients is skipped (the scale drops); the schedule
    # must not advance for a step that did not happen.
    if not run.scaler.is_enabled() or run.scaler.get_scale() >= scale:
        run.schedule.after_step()
    # Output gradients were recorded during the scaled backward (of each rank's own
    # mean loss, in a distributed job): bring them to the job's loss.
    rows = run.recorder.collect(scale=scale * run.ranks.backward_scale())
    return StepResult(loss, rows, lr, asks=asks)


def forward_backward(
    run: Run, batches: list[Batch], step: int, probe: HookRecorder | None = None
) -> torch.Tensor:
    """Forward and backward over a step's micro-batches (gradients add up); the summed
    loss, still on the device. The run's recorder records the last micro-batch, unless
    another `probe` (already armed) is recording.

    In a distributed job the gradients are averaged over the ranks during the last
    micro-batch's backward (DDP's no_sync before it); a probe's replay of a bad step
    locates the problem on this rank alone, without collectives (ranks may stop their
    replay at different micro-batches)."""
    total = torch.zeros((), device=run.device)
    model = run.stepped if probe is None else run.model
    for i, (x, y) in enumerate(batches):
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        last = i == len(batches) - 1
        if probe is None and not last:
            run.recorder.pause()
        elif probe is None:
            run.recorder.begin_step(step)
        with _accumulating(model, last):
            with run.autocast():
                loss = run.criterion(model(x), y) / len(batches)
            run.scaler.scale(loss).backward()
        total += loss.detach()
    return total


def _accumulating(model: nn.Module, last: bool) -> contextlib.AbstractContextManager[object]:
    """DDP's no_sync for every micro-batch but a step's last: gradients add up locally and
    are averaged once."""
    if isinstance(model, DistributedDataParallel) and not last:
        return model.no_sync()
    return contextlib.nullcontext()


def _undo(run: Run, batches: list[Batch], step: int, loss: float, replay: Replay) -> StepResult:
    """A non-finite loss: re-run the step to find where it started, then take it back."""
    run.recorder.pause()
    rows = replay_step(
        run.model,
        run.optimizer,
        batches,
        step,
        replay,
        scale=run.loss_scale(),
        run_batch=lambda batch, probe: forward_backward(run, [batch], step, probe),
    )
    run.optimizer.zero_grad()  # no update from this batch
    replay.restore_buffers(run.model)  # nor BatchNorm statistics from it
    run.scaler.update()  # a GradScaler must close its step (and lowers the scale)
    problem = nonfinite_message(first_nonfinite(rows), step, loss)
    return StepResult(loss, rows, math.nan, problem)


def micro_batches(loader: Loader, accumulate: int) -> Iterator[list[Batch]]:
    """The epoch's batches grouped `accumulate` at a time (the last group may be shorter)."""
    group: list[Batch] = []
    for x, y in loader:
        group.append((x, y))
        if len(group) == accumulate:
            yield group
            group = []
    if group:
        yield group


def clip_gradients(model: nn.Module, train: TrainSpec) -> None:
    """The spec's gradient clipping, by norm or by value."""
    clip = train.grad_clip
    if clip is None:
        return
    params = [p for p in model.parameters() if p.grad is not None]
    if clip.max_norm is not None:
        nn.utils.clip_grad_norm_(params, clip.max_norm, norm_type=clip.norm_type)
    elif clip.max_value is not None:
        nn.utils.clip_grad_value_(params, clip.max_value)
