"""fit(): the seed's training loop over epochs, with evaluation, checkpoints and callbacks.

Read it top to bottom: `fit` prepares a run and trains it; `train` runs epochs until the
plan's steps are done (or a callback or early stopping ends it); an epoch is the seed's
step (step.py) over the training data, then evaluation and a checkpoint. Everything that
touches the outside world is a Callback (callbacks.py), so this is plain PyTorch.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from shared.net.dryrun import DEFAULT_MAX_PARAMS
from shared.spec import JobSpec
from worker.training.callbacks import Callback, CallbackList, FitResult
from worker.training.checkpoint import CheckpointBlob, capture, restore_model
from worker.training.evaluate import evaluate, train_mode
from worker.training.setup import Run, prepare
from worker.training.step import micro_batches, train_step


@dataclass
class Progress:
    """Where a fit stands; what its FitResult reports."""

    step: int = 0
    epoch: int = 0
    loss: float = math.nan  # the last step's
    metrics: dict[str, float] = field(default_factory=dict)  # the last evaluated epoch's
    logged_lr: float = math.nan
    stopped: bool = False  # a callback asked to stop
    stopped_early: bool = False  # early stopping ended training
    last: CheckpointBlob | None = None  # the last epoch checkpoint
    best: CheckpointBlob | None = None  # early stopping's best epoch


def fit(
    spec: JobSpec,
    *,
    callbacks: Sequence[Callback] = (),
    device: str | torch.device | None = None,
    max_params: int = DEFAULT_MAX_PARAMS,
    data_dir: Path | None = None,
    initial_state: bytes | None = None,
) -> FitResult:
    """Train the spec's model on its data; see Callback for what is reported along the way."""
    cb = CallbackList(callbacks)
    try:
        run = prepare(
            spec, device=device, max_params=max_params, data_dir=data_dir,
            initial_state=initial_state,
        )  # fmt: skip
        cb.on_fit_start(model=run.model, total_steps=run.plan.total_steps, device=run.device)
        result = train(run, cb)
        cb.on_fit_end(result=result)
    except BaseException as error:
        cb.on_fit_error(error=error)
        raise
    return result


def train(run: Run, cb: Callback) -> FitResult:
    """Epochs until the plan's steps are done, a callback stops it, or early stopping does."""
    state = Progress()
    started = time.perf_counter()
    with run.recorder:
        train_mode(run.model)
        while state.step < run.plan.total_steps and not (state.stopped or state.stopped_early):
            state.epoch += 1
            losses = train_epoch(run, cb, state)
            if state.stopped:
                break  # a stopped epoch is not evaluated; the final checkpoint still comes
            end_epoch(run, cb, state, losses)
        cb.on_checkpoint(blob=final_checkpoint(run, state))
    if run.test_loader is not None and not state.stopped:
        report_test_metrics(run, cb, state)
    wall_s = time.perf_counter() - started
    return FitResult(
        steps=state.step,
        epochs=state.epoch,
        final_loss=state.loss,
        metrics=state.metrics,
        wall_s=wall_s,
        steps_per_s=state.step / wall_s if wall_s > 0 else 0.0,
        param_count=run.param_count,
        trainable_count=sum(p.numel() for p in run.model.parameters() if p.requires_grad),
        stopped=state.stopped,
        device=str(run.device),
        stopped_early=state.stopped_early,
        best_epoch=run.early.best_epoch if run.early is not None else None,
    )


def train_epoch(run: Run, cb: Callback, state: Progress) -> list[float]:
    """One pass over the training data, a step per group of micro-batches; returns the
    losses of the steps that updated the model."""
    losses: list[float] = []
    for batches in micro_batches(run.loader, run.train.accumulate_steps):
        state.step += 1
        done = train_step(run, batches, state.step)
        state.loss = done.loss
        if done.problem is not None:  # non-finite: the step was undone
            cb.on_step_end(step=state.step, epoch=state.epoch, loss=done.loss, traces=done.traces)
            cb.on_event(event=run.guard.skipped(done.problem, state.step))  # or raises
            run.guard.give_up_if_stuck(done.problem)
        else:
            run.guard.passed()
            losses.append(done.loss)
            for event in run.alerts.check(done.traces):
                cb.on_event(event=event)
            cb.on_step_end(step=state.step, epoch=state.epoch, loss=done.loss, traces=done.traces)
            if done.lr != state.logged_lr:
                state.logged_lr = done.lr
                cb.on_metrics(step=state.step, epoch=state.epoch, split="train",
                              values={"lr": done.lr})  # fmt: skip
        state.stopped = cb.should_stop()
        if state.stopped or state.step >= run.plan.total_steps:
            break
    return losses


def end_epoch(run: Run, cb: Callback, state: Progress, losses: list[float]) -> None:
    """Evaluate, report, advance an epoch schedule, checkpoint (and keep the best)."""
    # Every step of the epoch skipped (hooks.on_nonfinite "skip_step"): no mean.
    mean_loss = sum(losses) / len(losses) if losses else math.nan
    state.metrics = {"train_loss": mean_loss}
    if run.val_loader is not None:
        state.metrics |= evaluate(
            run.model, run.val_loader, run.criterion, run.device, run.classification, "val"
        )
    cb.on_epoch_end(step=state.step, epoch=state.epoch, metrics=state.metrics)
    run.schedule.after_epoch(state.metrics)
    state.last = capture(run.model, run.optimizer, step=state.step, epoch=state.epoch, tag="epoch")
    blobs = [state.last]
    if run.early is not None:
        if run.early.update(state.epoch, state.metrics):
            state.best = dataclasses.replace(state.last, tag="best")
            blobs.append(state.best)
        state.stopped_early = run.early.should_stop
    for blob in blobs:
        cb.on_checkpoint(blob=blob)


def final_checkpoint(run: Run, state: Progress) -> CheckpointBlob:
    """The "final" checkpoint; weights unchanged since the last epoch's reuse its bytes."""
    if state.last is not None and state.last.step == state.step:
        return dataclasses.replace(state.last, tag="final")
    return capture(run.model, run.optimizer, step=state.step, epoch=state.epoch, tag="final")


def report_test_metrics(run: Run, cb: Callback, state: Progress) -> None:
    """Test metrics, of the best epoch when early stopping kept one."""
    assert run.test_loader is not None
    if state.best is not None:
        restore_model(run.model, state.best.model_state)
    scores = evaluate(
        run.model, run.test_loader, run.criterion, run.device, run.classification, "test"
    )
    state.metrics = {**state.metrics, **scores}
    unprefixed = {key.partition("_")[2]: value for key, value in scores.items()}
    cb.on_metrics(step=state.step, epoch=state.epoch, split="test", values=unprefixed)
