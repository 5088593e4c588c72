"""fit(): the seed's training loop, plus evaluation, checkpoints, hooks and callbacks.

Everything that touches the outside world (database rows, progress, cancellation) is a
`Callback`, so this module is plain PyTorch and runs anywhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from shared.errors import SpecError
from shared.net.build import build_model
from shared.net.dryrun import DEFAULT_MAX_PARAMS
from shared.spec import HookSpec, JobSpec, TrainSpec
from shared.spec_check import SpecLimits, check_spec
from shared.steps import StepPlan
from worker.training.checkpoint import (
    CheckpointBlob,
    capture,
    load_initial_weights,
    restore_model,
)
from worker.training.data import make_datasets, make_loader
from worker.training.diagnose import AlertWatcher, Event, first_nonfinite, nonfinite_message
from worker.training.optim import current_lr, make_criterion, make_optimizer, make_schedule
from worker.training.probes import HookRecorder, TraceRow
from worker.training.stopping import EarlyStopping


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says at which step and where."""


# What a re-run of a bad step records: every hook, only what locates a NaN / Inf.
NONFINITE_PROBE = HookSpec(
    kinds=["forward_pre", "forward", "backward", "param_grad", "weights"],
    stats=["norm", "nonfinite"],
)
# hooks.on_nonfinite "skip_step" gives up after this many bad steps in a row: the model
# itself is broken then (NaN weights), not one batch.
MAX_SKIPPED_IN_A_ROW = 10


@dataclass
class RandomState:
    """The generators' state at a step's start, so a diagnostic re-run draws the same."""

    cpu: torch.Tensor
    cuda: list[torch.Tensor] | None

    @classmethod
    def capture(cls, device: torch.device) -> RandomState:
        cuda = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
        return cls(torch.get_rng_state(), cuda)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


def buffer_copies(model: nn.Module) -> list[torch.Tensor]:
    """Copies of the model's buffers (BatchNorm statistics), to undo a skipped step."""
    return [b.detach().clone() for b in model.buffers()]


def restore_buffers(model: nn.Module, saved: list[torch.Tensor] | None) -> None:
    """Put buffers back as buffer_copies() found them."""
    if saved is None:
        return
    with torch.no_grad():
        for buffer, copy in zip(model.buffers(), saved, strict=True):
            buffer.copy_(copy)


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


class Callback:
    """Hooks into fit(); every method is a no-op, override the ones you need."""

    def on_fit_start(self, *, model: nn.Module, total_steps: int, device: torch.device) -> None:
        """Called once, after the model is built and placed, before the first step."""

    def on_step_end(self, *, step: int, epoch: int, loss: float, traces: list[TraceRow]) -> None:
        """Called after every optimizer step; `traces` is empty on steps that are not logged."""

    def on_metrics(self, *, step: int, epoch: int, split: str, values: dict[str, float]) -> None:
        """Other scalars: the learning rate when it changes (split "train"), test metrics."""

    def on_epoch_end(self, *, step: int, epoch: int, metrics: dict[str, float]) -> None:
        """Called after each epoch's evaluation: train_loss, and val_loss / val_accuracy."""

    def on_checkpoint(self, *, blob: CheckpointBlob) -> None:
        """Each checkpoint: tag "epoch" after every epoch, "best" on improvement, "final"."""

    def should_stop(self) -> bool:
        """Polled once per step; True ends training early (FitResult.stopped)."""
        return False

    def on_event(self, *, event: Event) -> None:
        """Something a user should see in the job's events: an alert, a skipped step."""

    def on_fit_end(self, *, result: FitResult) -> None:
        """Called once after the final checkpoint; not called when fit raises."""


def resolve_device(requested: str | torch.device) -> torch.device:
    """Map "auto" to cuda when available, else cpu; cuda without a CUDA device is a SpecError."""
    name = str(requested)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpecError(
            "train.device is 'cuda' but this worker has no CUDA device",
            details=[{"loc": "train.device", "msg": "no CUDA device on this worker"}],
        )
    return device


def _autocast(train: TrainSpec, device: torch.device) -> contextlib.AbstractContextManager[None]:
    if train.precision == "fp32":
        return contextlib.nullcontext()
    if device.type != "cuda":
        raise SpecError(
            f"train.precision {train.precision!r} needs a CUDA device; this worker has none",
            details=[{"loc": "train.precision", "msg": "autocast runs on CUDA"}],
        )
    dtype = torch.bfloat16 if train.precision == "bf16" else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


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
    train = spec.train
    dev = resolve_device(device if device is not None else train.device)
    # Shapes and size again, before anything is allocated for real; pass the same
    # max_params the API checked with, so a worker never refuses what the API accepted.
    checked = check_spec(spec, limits=SpecLimits(max_params=max_params), data_dir=data_dir)
    _autocast(train, dev)  # refuse fp16/bf16 on a CPU worker before any work

    torch.manual_seed(train.seed)  # weights depend on the seed only
    model = build_model(spec.model)  # init rules and freezing applied
    if initial_state is not None and spec.model.init_from is not None:
        start = spec.model.init_from
        load_initial_weights(model, initial_state, strict=start.strict, skip=start.skip)
    model.to(dev)

    splits = make_datasets(spec.data, seed=train.seed, loss=train.loss, data_dir=data_dir)
    pin = dev.type == "cuda"  # page-locked host batches copy to the GPU asynchronously
    loader = make_loader(
        splits.train, batch_size=train.batch_size, shuffle=True, seed=train.seed, train=True,
        num_workers=train.num_workers, pin_memory=pin,
    )  # fmt: skip
    val_loader, test_loader = (
        make_loader(ds, batch_size=train.batch_size, shuffle=False, seed=0,
                    num_workers=train.num_workers, pin_memory=pin)
        if ds is not None
        else None
        for ds in (splits.val, splits.test)
    )  # fmt: skip
    optimizer = make_optimizer((p for p in model.parameters() if p.requires_grad), train.optimizer)
    criterion = make_criterion(train)
    classification = spec.data.task == "classification"
    # Counted on the samples the files really hold (the API counted the nominal size).
    plan = StepPlan.of(train, len(splits.train))
    n_steps = plan.total_steps
    schedule = make_schedule(optimizer, train.scheduler, total_steps=n_steps, epochs=plan.epochs)
    scaler = torch.amp.GradScaler(dev.type, enabled=train.precision == "fp16")
    early = EarlyStopping(train.early_stopping) if train.early_stopping else None
    recorder = HookRecorder(model, spec.hooks)
    alerts = AlertWatcher(spec.hooks.alerts)

    def emit(event: Event) -> None:
        for cb in callbacks:
            cb.on_event(event=event)

    def run_batches(
        batches: list[tuple[torch.Tensor, torch.Tensor]], probe: HookRecorder, step: int
    ) -> torch.Tensor:
        """Forward and backward over a step's micro-batches; gradients add up."""
        total = torch.zeros((), device=dev)
        for i, (x, y) in enumerate(batches):
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            # Hooks record the last micro-batch's backward and the summed gradients.
            if probe is recorder and i < len(batches) - 1:
                probe.pause()
            elif probe is recorder:
                probe.begin_step(step)
            with _autocast(train, dev):
                loss = criterion(model(x), y) / len(batches)
            scaler.scale(loss).backward()
            total += loss.detach()
        return total

    def diagnose(
        batches: list[tuple[torch.Tensor, torch.Tensor]], step: int, rng: RandomState
    ) -> list[TraceRow]:
        """Re-run the bad step's batches, one at a time with every hook armed, to find
        where it went wrong; random draws (dropout) replay and buffers are put back."""
        recorder.pause()
        buffers = buffer_copies(model)
        rng.restore()
        scale = scaler.get_scale() if scaler.is_enabled() else 1.0
        probe = HookRecorder(model, NONFINITE_PROBE).attach()
        rows: list[TraceRow] = []
        try:
            for batch in batches:
                optimizer.zero_grad()
                probe.begin_step(step, force=True)
                run_batches([batch], probe, step)
                rows = probe.collect(scale=scale, scaled=("backward", "param_grad"))
                if first_nonfinite(rows) is not None:
                    break  # the micro-batch where it happens, not a later finite one
            return rows
        finally:
            probe.detach()
            restore_buffers(model, buffers)

    for cb in callbacks:
        cb.on_fit_start(model=model, total_steps=n_steps, device=dev)

    step = epoch = 0
    skip_bad_steps = spec.hooks.on_nonfinite == "skip_step"
    skipped_in_a_row = 0
    loss_value = math.nan
    metrics: dict[str, float] = {}
    stopped = stopped_early = False
    last_blob: CheckpointBlob | None = None
    best_blob: CheckpointBlob | None = None
    logged_lr = math.nan
    started = time.perf_counter()
    recorder.attach()
    try:
        train_mode(model)
        while step < n_steps and not (stopped or stopped_early):
            epoch += 1
            epoch_losses: list[float] = []
            for micro_batches in _steps(loader, train.accumulate_steps):
                step += 1
                # The seed's loop: zero_grad, forward, loss, backward, step. Gradients
                # of the micro-batches add up until the optimizer step, as in the notes.
                optimizer.zero_grad()
                rng = RandomState.capture(dev)
                saved = buffer_copies(model) if skip_bad_steps else None
                step_loss = run_batches(micro_batches, recorder, step)
                scaler.unscale_(optimizer)  # param_grad traces and clipping see true gradients
                loss_value = step_loss.item()  # the step's one host sync, before the update
                if not math.isfinite(loss_value):
                    rows = diagnose(micro_batches, step, rng)
                    message = nonfinite_message(first_nonfinite(rows), step, loss_value)
                    for cb in callbacks:  # the rows of the bad step are kept
                        cb.on_step_end(step=step, epoch=epoch, loss=loss_value, traces=rows)
                    if spec.hooks.on_nonfinite == "fail":
                        raise TrainingDiverged(message)
                    emit(Event("skipped_step", message, {"step": step}))
                    optimizer.zero_grad()  # no update from this batch
                    restore_buffers(model, saved)  # nor BatchNorm statistics from it
                    scaler.update()  # a GradScaler must close its step (and lowers the scale)
                    skipped_in_a_row += 1
                    if skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
                        raise TrainingDiverged(
                            f"{skipped_in_a_row} steps in a row skipped as non-finite; last: "
                            + message
                        )
                    if step >= n_steps or any(cb.should_stop() for cb in callbacks):
                        stopped = step < n_steps
                        break
                    continue
                skipped_in_a_row = 0
                recorder.after_backward()
                _clip(model, train)
                lr = current_lr(optimizer)  # the rate this step uses
                scale = scaler.get_scale() if scaler.is_enabled() else 1.0
                scaler.step(optimizer)
                scaler.update()
                # fp16: a step with inf/NaN gradients is skipped (the scale drops); the
                # schedule must not advance for a step that did not happen.
                if not scaler.is_enabled() or scaler.get_scale() >= scale:
                    schedule.after_step()
                # Output gradients were recorded during the scaled backward: unscale them.
                traces = recorder.collect(scale=scale)
                for event in alerts.check(traces):
                    emit(event)

                epoch_losses.append(loss_value)
                for cb in callbacks:
                    cb.on_step_end(step=step, epoch=epoch, loss=loss_value, traces=traces)
                if lr != logged_lr:
                    logged_lr = lr
                    for cb in callbacks:
                        cb.on_metrics(step=step, epoch=epoch, split="train", values={"lr": lr})
                stopped = any(cb.should_stop() for cb in callbacks)
                if stopped or step >= n_steps:
                    break
            if stopped:
                break  # a stopped epoch is not evaluated; the final checkpoint still comes

            # Every step of the epoch skipped (hooks.on_nonfinite "skip_step"): no mean.
            mean_loss = sum(epoch_losses) / len(epoch_losses) if epoch_losses else math.nan
            metrics = {"train_loss": mean_loss}
            if val_loader is not None:
                metrics |= evaluate(model, val_loader, criterion, dev, classification, "val")
            for cb in callbacks:
                cb.on_epoch_end(step=step, epoch=epoch, metrics=metrics)
            schedule.after_epoch(metrics)
            last_blob = capture(model, optimizer, step=step, epoch=epoch, tag="epoch")
            blobs = [last_blob]
            if early is not None:
                if early.update(epoch, metrics):
                    best_blob = dataclasses.replace(last_blob, tag="best")
                    blobs.append(best_blob)
                stopped_early = early.should_stop
            for blob in blobs:
                for cb in callbacks:
                    cb.on_checkpoint(blob=blob)

        # Weights unchanged since the last epoch checkpoint: reuse its bytes.
        if last_blob is not None and last_blob.step == step:
            final = dataclasses.replace(last_blob, tag="final")
        else:
            final = capture(model, optimizer, step=step, epoch=epoch, tag="final")
        for cb in callbacks:
            cb.on_checkpoint(blob=final)
    finally:
        recorder.detach()

    if test_loader is not None and not stopped:
        if best_blob is not None:  # early stopping: report the test score of the best epoch
            restore_model(model, best_blob.model_state)
        test = evaluate(model, test_loader, criterion, dev, classification, "test")
        metrics = {**metrics, **test}
        for cb in callbacks:
            cb.on_metrics(step=step, epoch=epoch, split="test", values=_unprefixed(test))

    wall_s = time.perf_counter() - started
    result = FitResult(
        steps=step,
        epochs=epoch,
        final_loss=loss_value,
        metrics=metrics,
        wall_s=wall_s,
        steps_per_s=step / wall_s if wall_s > 0 else 0.0,
        param_count=checked.dry_run.param_count,
        trainable_count=sum(p.numel() for p in model.parameters() if p.requires_grad),
        stopped=stopped,
        device=str(dev),
        stopped_early=stopped_early,
        best_epoch=early.best_epoch if early is not None else None,
    )
    for cb in callbacks:
        cb.on_fit_end(result=result)
    return result


def train_mode(model: nn.Module) -> None:
    """model.train(), except normalisation layers whose parameters are all frozen.

    A frozen BatchNorm must not keep updating its running statistics either, or a
    "frozen" body would still change under fine-tuning.
    """
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            own = list(module.parameters(recurse=False))
            if own and not any(p.requires_grad for p in own):
                module.eval()


def _steps(
    loader: DataLoader[tuple[torch.Tensor, ...]], accumulate: int
) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """The epoch's batches grouped `accumulate` at a time (the last group may be shorter)."""
    group: list[tuple[torch.Tensor, torch.Tensor]] = []
    for x, y in loader:
        group.append((x, y))
        if len(group) == accumulate:
            yield group
            group = []
    if group:
        yield group


def _clip(model: nn.Module, train: TrainSpec) -> None:
    clip = train.grad_clip
    if clip is None:
        return
    params = [p for p in model.parameters() if p.grad is not None]
    if clip.max_norm is not None:
        nn.utils.clip_grad_norm_(params, clip.max_norm, norm_type=clip.norm_type)
    elif clip.max_value is not None:
        nn.utils.clip_grad_value_(params, clip.max_value)


def _unprefixed(metrics: dict[str, float]) -> dict[str, float]:
    return {key.partition("_")[2]: value for key, value in metrics.items()}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader[tuple[torch.Tensor, ...]],
    criterion: nn.Module,
    device: torch.device,
    classification: bool,
    split: str = "val",
) -> dict[str, float]:
    """`<split>_loss` (mean over samples) and, for classification, `<split>_accuracy`."""
    model.eval()
    # Accumulate on the device and read back once, not once per batch.
    total_loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        output = model(x)
        total_loss += criterion(output, y).double() * x.shape[0]
        if classification:
            labels = y.argmax(dim=1) if y.is_floating_point() else y  # one-hot targets
            correct += (output.argmax(dim=1) == labels).sum()
        seen += x.shape[0]
    train_mode(model)
    metrics = {f"{split}_loss": total_loss.item() / seen}
    if classification:
        metrics[f"{split}_accuracy"] = correct.item() / seen
    return metrics
