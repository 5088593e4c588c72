"""fit(): the seed's training loop, plus evaluation, checkpoints, hooks and callbacks.

Everything that touches the outside world (database rows, progress, cancellation) is a
`Callback`, so this module is plain PyTorch and runs anywhere.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from shared.errors import SpecError
from shared.netspec import DEFAULT_MAX_PARAMS, build_model, dry_run
from shared.spec import JobSpec, OptimizerSpec, TrainSpec
from worker.training.checkpoint import CheckpointBlob, capture
from worker.training.data import make_datasets, make_loader
from worker.training.probes import HookRecorder, TraceRow


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says at which step."""


@dataclass
class FitResult:
    """What a finished (or stopped) fit reports."""

    steps: int
    epochs: int
    final_loss: float
    metrics: dict[str, float]  # the last evaluated epoch's metrics
    wall_s: float
    steps_per_s: float
    param_count: int
    trainable_count: int
    stopped: bool
    device: str


class Callback:
    """Hooks into fit(); every method is a no-op, override the ones you need."""

    def on_fit_start(self, *, model: nn.Module, total_steps: int, device: torch.device) -> None:
        """Called once, after the model is built and placed, before the first step."""

    def on_step_end(self, *, step: int, epoch: int, loss: float, traces: list[TraceRow]) -> None:
        """Called after every optimizer step; `traces` is empty on steps that are not logged."""

    def on_epoch_end(self, *, step: int, epoch: int, metrics: dict[str, float]) -> None:
        """Called after each epoch's evaluation: train_loss, and val_loss / val_accuracy."""

    def on_checkpoint(self, *, blob: CheckpointBlob) -> None:
        """Called with each checkpoint: tag "epoch" after every epoch, "final" at the end."""

    def should_stop(self) -> bool:
        """Polled once per step; True ends training early (FitResult.stopped)."""
        return False

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


def make_optimizer(params: Sequence[nn.Parameter], spec: OptimizerSpec) -> torch.optim.Optimizer:
    """torch.optim.SGD or Adam configured from the spec."""
    if spec.name == "Adam":
        return torch.optim.Adam(
            params, lr=spec.lr, betas=spec.betas, eps=spec.eps, weight_decay=spec.weight_decay
        )
    return torch.optim.SGD(
        params,
        lr=spec.lr,
        momentum=spec.momentum,
        nesterov=spec.nesterov,
        weight_decay=spec.weight_decay,
    )


def total_steps(train: TrainSpec, batches_per_epoch: int) -> int:
    """Optimizer steps a fit will take: epochs x batches, capped by max_steps."""
    limits = [train.max_steps] if train.max_steps is not None else []
    if train.epochs is not None:
        limits.append(train.epochs * batches_per_epoch)
    return min(limits)


def fit(
    spec: JobSpec,
    *,
    callbacks: Sequence[Callback] = (),
    device: str | torch.device | None = None,
    max_params: int = DEFAULT_MAX_PARAMS,
) -> FitResult:
    """Train the spec's model on its data; see Callback for what is reported along the way."""
    dev = resolve_device(device if device is not None else spec.train.device)
    # Shapes and size again, before anything is allocated for real; pass the same
    # max_params the API checked with, so a worker never refuses what the API accepted.
    report = dry_run(spec, max_params=max_params)

    torch.manual_seed(spec.train.seed)  # weights depend on the seed only
    model = build_model(spec.model).to(dev)
    train_ds, val_ds = make_datasets(spec.data, seed=spec.train.seed, loss=spec.train.loss)
    batch_size = spec.train.batch_size
    loader = make_loader(
        train_ds, batch_size=batch_size, shuffle=True, seed=spec.train.seed, train=True
    )
    val_loader = None
    if val_ds is not None:
        val_loader = make_loader(val_ds, batch_size=batch_size, shuffle=False, seed=0)
    optimizer = make_optimizer(list(model.parameters()), spec.train.optimizer)
    criterion: nn.Module = nn.MSELoss() if spec.train.loss == "MSELoss" else nn.CrossEntropyLoss()
    classification = spec.data.dataset == "digits" or spec.data.task == "classification"
    n_steps = total_steps(spec.train, len(loader))
    recorder = HookRecorder(model, kinds=spec.hooks.kinds, every_n_steps=spec.hooks.every_n_steps)

    for cb in callbacks:
        cb.on_fit_start(model=model, total_steps=n_steps, device=dev)

    step = epoch = 0
    loss_value = math.nan
    metrics: dict[str, float] = {}
    stopped = False
    last_blob: CheckpointBlob | None = None
    start = time.perf_counter()
    recorder.attach()
    try:
        model.train()
        while step < n_steps and not stopped:
            epoch += 1
            epoch_losses: list[float] = []
            for x, y in loader:
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                step += 1
                optimizer.zero_grad()
                recorder.begin_step(step)
                output = model(x)
                loss = criterion(output, y)
                loss.backward()
                traces = recorder.collect()
                optimizer.step()

                loss_value = loss.item()  # the step's one host sync
                if not math.isfinite(loss_value):
                    raise TrainingDiverged(
                        f"loss became {loss_value} at step {step}; lower "
                        "train.optimizer.lr or check that the data and loss fit the model"
                    )
                epoch_losses.append(loss_value)
                for cb in callbacks:
                    cb.on_step_end(step=step, epoch=epoch, loss=loss_value, traces=traces)
                stopped = any(cb.should_stop() for cb in callbacks)
                if stopped or step >= n_steps:
                    break
            if stopped:
                break  # a stopped epoch is not evaluated; the final checkpoint still comes

            metrics = {"train_loss": sum(epoch_losses) / len(epoch_losses)}
            if val_loader is not None:
                metrics |= evaluate(model, val_loader, criterion, dev, classification)
            for cb in callbacks:
                cb.on_epoch_end(step=step, epoch=epoch, metrics=metrics)
            last_blob = capture(model, optimizer, step=step, epoch=epoch, tag="epoch")
            for cb in callbacks:
                cb.on_checkpoint(blob=last_blob)

        # Weights unchanged since the last epoch checkpoint: reuse its bytes.
        if last_blob is not None and last_blob.step == step:
            final = dataclasses.replace(last_blob, tag="final")
        else:
            final = capture(model, optimizer, step=step, epoch=epoch, tag="final")
        for cb in callbacks:
            cb.on_checkpoint(blob=final)
    finally:
        recorder.detach()

    wall_s = time.perf_counter() - start
    result = FitResult(
        steps=step,
        epochs=epoch,
        final_loss=loss_value,
        metrics=metrics,
        wall_s=wall_s,
        steps_per_s=step / wall_s if wall_s > 0 else 0.0,
        param_count=report.param_count,
        trainable_count=report.trainable_count,
        stopped=stopped,
        device=str(dev),
    )
    for cb in callbacks:
        cb.on_fit_end(result=result)
    return result


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader[tuple[torch.Tensor, ...]],
    criterion: nn.Module,
    device: torch.device,
    classification: bool,
) -> dict[str, float]:
    """val_loss (mean over samples) and, for classification, val_accuracy; leaves train mode."""
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
            labels = y.argmax(dim=1) if y.is_floating_point() else y  # one-hot under MSELoss
            correct += (output.argmax(dim=1) == labels).sum()
        seen += x.shape[0]
    model.train()
    metrics = {"val_loss": total_loss.item() / seen}
    if classification:
        metrics["val_accuracy"] = correct.item() / seen
    return metrics
