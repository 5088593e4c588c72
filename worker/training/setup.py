"""Everything one fit needs, built from the spec: model, data, optimizer, schedule, probes."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from shared.net.build import build_model
from shared.net.dryrun import DEFAULT_MAX_PARAMS
from shared.spec import JobSpec, TrainSpec
from shared.spec_check import SpecLimits, check_spec
from shared.steps import StepPlan
from worker.training.alerts import AlertWatcher
from worker.training.checkpoint import load_initial_weights
from worker.training.data import Splits, make_datasets, make_loader
from worker.training.device import autocast, resolve_device
from worker.training.diagnose import NonFiniteGuard
from worker.training.optim import Schedule, make_criterion, make_optimizer, make_schedule
from worker.training.probes import HookRecorder
from worker.training.ranks import Ranks, rank_seed
from worker.training.stopping import EarlyStopping

Loader = DataLoader[tuple[torch.Tensor, ...]]


@dataclass
class Run:
    """The parts of one fit; `prepare` builds them in an order that fixes every seed."""

    spec: JobSpec
    device: torch.device
    plan: StepPlan
    param_count: int
    model: nn.Module
    loader: Loader
    val_loader: Loader | None
    test_loader: Loader | None
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    schedule: Schedule
    scaler: torch.amp.GradScaler
    early: EarlyStopping | None
    recorder: HookRecorder  # the spec's hooks
    alerts: AlertWatcher  # the spec's gradient-norm thresholds
    guard: NonFiniteGuard  # what a non-finite loss does
    ranks: Ranks  # where this process stands in a distributed job (rank 0 of 1 alone)
    # What a step calls: the DistributedDataParallel wrapper in a distributed job, else
    # the model itself. `model` stays the plain module (checkpoints, hooks, evaluation).
    stepped: nn.Module

    @property
    def train(self) -> TrainSpec:
        """The spec's training section."""
        return self.spec.train

    @property
    def classification(self) -> bool:
        """Whether evaluation reports accuracy."""
        return self.spec.data.task == "classification"

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """The context of a forward pass in the spec's precision."""
        return autocast(self.train, self.device)

    def loss_scale(self) -> float:
        """The GradScaler's current scale (1.0 without fp16)."""
        return self.scaler.get_scale() if self.scaler.is_enabled() else 1.0


def prepare(
    spec: JobSpec,
    *,
    device: str | torch.device | None = None,
    max_params: int = DEFAULT_MAX_PARAMS,
    data_dir: Path | None = None,
    initial_state: bytes | None = None,
    ranks: Ranks | None = None,
) -> Run:
    """Check the spec again, then build its model (under its seed), data and optimizer;
    in a distributed job (`ranks`, with its process group initialised) this process's
    replica and its share of the data."""
    train = spec.train
    ranks = ranks or Ranks()
    if ranks.world_size != train.world_size:
        raise ValueError(
            f"train.distributed.world_size is {train.world_size} but this fit runs on "
            f"{ranks.world_size} process(es): distributed jobs start through the worker"
        )
    dev = resolve_device(device if device is not None else train.device)
    # Shapes and size again, before anything is allocated for real; pass the same
    # max_params the API checked with, so a worker never refuses what the API accepted.
    checked = check_spec(spec, limits=SpecLimits(max_params=max_params), data_dir=data_dir)
    autocast(train, dev)  # refuse fp16/bf16 on a CPU worker before any work

    torch.manual_seed(train.seed)  # weights depend on the seed only
    model = build_model(spec.model)  # init rules and freezing applied
    if initial_state is not None and spec.model.init_from is not None:
        start = spec.model.init_from
        load_initial_weights(model, initial_state, strict=start.strict, skip=start.skip)
    model.to(dev)

    splits = make_datasets(spec.data, seed=train.seed, loss=train.loss, data_dir=data_dir)
    loader, val_loader, test_loader = _loaders(splits, train, dev, ranks)
    stepped: nn.Module = model
    if ranks.distributed:
        # Every rank built the same weights from the seed (DDP also broadcasts rank 0's);
        # from here on each rank's dropout draws its own stream.
        torch.manual_seed(rank_seed(train.seed, ranks.rank))
        device_ids = [dev] if dev.type == "cuda" else None
        stepped = DistributedDataParallel(model, device_ids=device_ids)
    optimizer = make_optimizer((p for p in model.parameters() if p.requires_grad), train.optimizer)
    criterion = make_criterion(train)
    # Counted on the samples the files really hold (the API counted the nominal size).
    plan = StepPlan.of(train, len(splits.train))
    ranks.same_everywhere(plan.total_steps, "the run's steps (do all nodes hold the same data?)")
    return Run(
        spec=spec,
        device=dev,
        plan=plan,
        param_count=checked.dry_run.param_count,
        model=model,
        loader=loader,
        val_loader=val_loader,
        test_loader=test_loader,
        optimizer=optimizer,
        criterion=criterion,
        schedule=make_schedule(
            optimizer, train.scheduler, total_steps=plan.total_steps, epochs=plan.epochs
        ),
        scaler=torch.amp.GradScaler(dev.type, enabled=train.precision == "fp16"),
        early=EarlyStopping(train.early_stopping) if train.early_stopping else None,
        recorder=HookRecorder(model, spec.hooks, ranks),
        alerts=AlertWatcher(spec.hooks.alerts),
        guard=NonFiniteGuard(skip=spec.hooks.on_nonfinite == "skip_step"),
        ranks=ranks,
        stepped=stepped,
    )


def _loaders(
    splits: Splits, train: TrainSpec, device: torch.device, ranks: Ranks
) -> tuple[Loader, Loader | None, Loader | None]:
    """Training (shuffled under the seed; this rank's share), validation and test loaders
    (rank 0 evaluates)."""
    pin = device.type == "cuda"  # page-locked host batches copy to the GPU asynchronously
    loader = make_loader(
        splits.train, batch_size=train.batch_size, shuffle=True, seed=train.seed, train=True,
        num_workers=train.num_workers, pin_memory=pin, rank=ranks.rank,
        world_size=ranks.world_size,
    )  # fmt: skip
    val = splits.val
    if val is not None and ranks.distributed:  # each rank evaluates every world_size-th sample
        val = Subset(val, range(ranks.rank, len(val), ranks.world_size))  # type: ignore[assignment]
    val_loader, test_loader = (
        make_loader(ds, batch_size=train.batch_size, shuffle=False, seed=0,
                    num_workers=train.num_workers, pin_memory=pin)
        if ds is not None
        else None
        for ds in (val, splits.test)
    )  # fmt: skip
    return loader, val_loader, test_loader
