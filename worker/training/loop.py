"""fit(): the seed's training loop over epochs, with evaluation, checkpoints and callbacks.

Read it top to bottom: `fit` prepares a run (and puts it back where a resumable checkpoint
left it) and trains it; `train` runs epochs until the plan's steps are done, a callback
stops it, early stopping does, or a callback suspends it (a resumable checkpoint to go on
from later); an epoch is the seed's step (step.py) over the training data, with a
resumable checkpoint now and then, then evaluation and an epoch checkpoint. Everything
that touches the outside world is a Callback (callbacks.py): plain PyTorch.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from shared.net.dryrun import DEFAULT_MAX_PARAMS
from shared.spec import JobSpec
from worker.training.callbacks import Callback, CallbackList, FitResult
from worker.training.checkpoint import CheckpointBlob, capture, restore_model
from worker.training.evaluate import evaluate, train_mode
from worker.training.progress import Progress
from worker.training.ranks import Asks, Ranks
from worker.training.resume import Cadence, ResumePoint, restore, resume_state
from worker.training.setup import Run, prepare
from worker.training.step import micro_batches, train_step

log = logging.getLogger(__name__)


def fit(
    spec: JobSpec,
    *,
    callbacks: Sequence[Callback] = (),
    device: str | torch.device | None = None,
    max_params: int = DEFAULT_MAX_PARAMS,
    data_dir: Path | None = None,
    initial_state: bytes | None = None,
    resume: ResumePoint | None = None,
    checkpoint_seconds: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    ranks: Ranks | None = None,
) -> FitResult:
    """Train the spec's model on its data, or go on from `resume`; see Callback for what
    is reported along the way. Resumable checkpoints come at epoch ends, every
    `train.checkpoint_every_steps` steps and every `checkpoint_seconds`.

    In a distributed job every rank calls fit with its `ranks` (the process group is
    initialised); rank 0's callbacks see what a single process's would (the loss over
    every rank, merged probe rows, checkpoints, the test metrics), and the other ranks'
    see no checkpoints.
    """
    cb = CallbackList(callbacks)
    try:
        run = prepare(
            spec, device=device, max_params=max_params, data_dir=data_dir,
            initial_state=initial_state, ranks=ranks,
        )  # fmt: skip
        state = Progress()
        if resume is not None:
            restore(run, state, resume)
        cadence = Cadence(spec.train.checkpoint_every_steps, checkpoint_seconds, clock)
        cb.on_fit_start(model=run.model, total_steps=run.plan.total_steps, device=run.device)
        result = train(run, cb, state, cadence)
        cb.on_fit_end(result=result)
    except BaseException as error:
        cb.on_fit_error(error=error)
        raise
    return result


def train(run: Run, cb: Callback, state: Progress, cadence: Cadence) -> FitResult:
    """Epochs until the plan's steps are done, a callback stops it, or early stopping does."""
    started = time.perf_counter()
    with run.recorder:
        train_mode(run.model)
        while state.step < run.plan.total_steps and not (state.stopped or state.stopped_early):
            if state.epoch_step == 0:  # a new epoch (a resumed one may be part-way in)
                state.epoch += 1
                state.epoch_losses = []
                generator = run.loader.generator
                state.epoch_start = generator.get_state() if generator is not None else None
            train_epoch(run, cb, state, cadence)
            if state.stopped or state.suspended:
                break  # a stopped epoch is not evaluated; the final checkpoint still comes
            end_epoch(run, cb, state)
            cadence.taken()
            # A callback that decided at the epoch's end (a sweep's pruner at its rung)
            # stops here, not one step into the next epoch. Alone only: the ranks of a
            # distributed job agree on stopping during a step.
            more = state.step < run.plan.total_steps
            if more and not run.ranks.distributed and cb.should_stop():
                state.stopped = True
        # A suspended fit is not over: its resumed one ends it.
        if not state.suspended and run.ranks.leads:
            cb.on_checkpoint(blob=final_checkpoint(run, state))
    if run.test_loader is not None and not (state.stopped or state.suspended) and run.ranks.leads:
        report_test_metrics(run, cb, state)
    wall_s = time.perf_counter() - started
    steps = state.step - state.first_step  # taken by this attempt
    return FitResult(
        steps=state.step,
        epochs=state.epoch,
        final_loss=state.loss,
        metrics=state.metrics,
        wall_s=wall_s,
        steps_per_s=steps / wall_s if wall_s > 0 else 0.0,
        param_count=run.param_count,
        trainable_count=sum(p.numel() for p in run.model.parameters() if p.requires_grad),
        stopped=state.stopped,
        device=str(run.device),
        stopped_early=state.stopped_early,
        best_epoch=run.early.best_epoch if run.early is not None else None,
        resumed_from_step=state.first_step,
        suspended=state.suspended,
    )


def train_epoch(run: Run, cb: Callback, state: Progress, cadence: Cadence) -> None:
    """The rest of the epoch over the training data, a step per group of micro-batches;
    the losses of the steps that updated the model go to `state.epoch_losses`."""
    for batches in micro_batches(run.loader, run.train.accumulate_steps):
        state.step += 1
        state.epoch_step += 1
        # In a distributed job the callbacks are asked during the step, and the ranks agree
        # on the answers with the step's loss (one collective); alone, after the step.
        done = train_step(run, batches, state.step, poll=lambda: _asks(cb, cadence, state.step))
        state.loss = done.loss
        if done.problem is not None:  # non-finite: the step was undone
            cb.on_step_end(step=state.step, epoch=state.epoch, loss=done.loss, traces=done.traces)
            cb.on_event(event=run.guard.skipped(done.problem, state.step))  # or raises
            run.guard.give_up_if_stuck(done.problem)
        else:
            run.guard.passed()
            state.epoch_losses.append(done.loss)
            for event in run.alerts.check(done.traces):
                cb.on_event(event=event)
            cb.on_step_end(step=state.step, epoch=state.epoch, loss=done.loss, traces=done.traces)
            if done.lr != state.logged_lr:
                state.logged_lr = done.lr
                cb.on_metrics(step=state.step, epoch=state.epoch, split="train",
                              values={"lr": done.lr})  # fmt: skip
        asks = done.asks if done.asks is not None else _asks(cb, cadence, state.step)
        state.stopped = asks.stop
        if state.stopped or state.step >= run.plan.total_steps:
            break
        if asks.suspend:  # checkpoint here; a resumed fit takes the next step
            state.suspended = True
            checkpoint(cb, resumable(run, state, tag="step"))
            break
        # Not at the epoch's end, whose own checkpoint comes after evaluation.
        if state.epoch_step < run.plan.steps_per_epoch and asks.checkpoint:
            checkpoint(cb, resumable(run, state, tag="step"))
            cadence.taken()


def _asks(cb: Callback, cadence: Cadence, step: int) -> Asks:
    """What the callbacks ask for at this step: stop, suspend, a resumable checkpoint."""
    return Asks(stop=cb.should_stop(), suspend=cb.should_suspend(), checkpoint=cadence.due(step))


def end_epoch(run: Run, cb: Callback, state: Progress) -> None:
    """Evaluate, report, advance an epoch schedule, checkpoint (and keep the best)."""
    losses = state.epoch_losses  # every step skipped ("skip_step"): no mean
    state.metrics = {"train_loss": sum(losses) / len(losses) if losses else float("nan")}
    if run.val_loader is not None:  # a distributed job's ranks each take their share
        state.metrics |= evaluate(
            run.model, run.val_loader, run.criterion, run.device, run.classification, "val",
            ranks=run.ranks,
        )  # fmt: skip
    cb.on_epoch_end(step=state.step, epoch=state.epoch, metrics=state.metrics)
    run.schedule.after_epoch(state.metrics)
    best = run.early is not None and run.early.update(state.epoch, state.metrics)
    if run.early is not None:
        state.stopped_early = run.early.should_stop
    state.epoch_step, state.epoch_losses = 0, []
    state.last = resumable(run, state, tag="epoch")
    if state.last is None:  # not rank 0
        return
    # The job's log (worker.job_log) shows its owner one line per epoch.
    said = ", ".join(f"{name} {value:.4g}" for name, value in state.metrics.items())
    log.info("epoch %d (step %d): %s", state.epoch, state.step, said)
    blobs = [state.last]
    if best:
        blobs.append(dataclasses.replace(state.last, tag="best", resume_state=None))
        state.best_model_state = state.last.model_state
    for blob in blobs:
        cb.on_checkpoint(blob=blob)


def resumable(run: Run, state: Progress, *, tag: str) -> CheckpointBlob | None:
    """A checkpoint that a fit can go on from: weights, optimizer and the resume state.
    Every rank takes part (their random states go in it); rank 0 has it, the others None."""
    resume = resume_state(run, state)
    if resume is None:
        return None
    return capture(
        run.model, run.optimizer, step=state.step, epoch=state.epoch, tag=tag,
        resume_state=resume,
    )  # fmt: skip


def checkpoint(cb: Callback, blob: CheckpointBlob | None) -> None:
    """Report a checkpoint this rank holds (rank 0's; the others hold None)."""
    if blob is not None:
        cb.on_checkpoint(blob=blob)


def final_checkpoint(run: Run, state: Progress) -> CheckpointBlob:
    """The "final" checkpoint; weights unchanged since the last epoch's reuse its bytes."""
    if state.last is not None and state.last.step == state.step:
        return dataclasses.replace(state.last, tag="final", resume_state=None)
    return capture(run.model, run.optimizer, step=state.step, epoch=state.epoch, tag="final")


def report_test_metrics(run: Run, cb: Callback, state: Progress) -> None:
    """Test metrics, of the best epoch when early stopping kept one."""
    assert run.test_loader is not None
    if state.best_model_state is not None:
        restore_model(run.model, state.best_model_state)
    scores = evaluate(
        run.model, run.test_loader, run.criterion, run.device, run.classification, "test"
    )
    state.metrics = {**state.metrics, **scores}
    unprefixed = {key.partition("_")[2]: value for key, value in scores.items()}
    cb.on_metrics(step=state.step, epoch=state.epoch, split="test", values=unprefixed)
