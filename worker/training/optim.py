"""Optimizer, learning-rate schedule and loss from the spec: torch.optim and torch.nn, named."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import lr_scheduler

from shared.spec import OptimizerSpec, SchedulerSpec, TrainSpec


def make_optimizer(params: Iterable[nn.Parameter], spec: OptimizerSpec) -> torch.optim.Optimizer:
    """SGD / Adam / AdamW / RMSprop over `params` (the caller leaves frozen ones out)."""
    params = list(params)
    if spec.name in ("Adam", "AdamW"):
        adam = torch.optim.Adam if spec.name == "Adam" else torch.optim.AdamW
        return adam(
            params, lr=spec.lr, betas=spec.betas, eps=spec.eps, weight_decay=spec.weight_decay
        )
    if spec.name == "RMSprop":
        return torch.optim.RMSprop(
            params,
            lr=spec.lr,
            alpha=spec.alpha,
            eps=spec.eps,
            momentum=spec.momentum,
            weight_decay=spec.weight_decay,
        )
    return torch.optim.SGD(
        params,
        lr=spec.lr,
        momentum=spec.momentum,
        nesterov=spec.nesterov,
        weight_decay=spec.weight_decay,
    )


def make_criterion(train: TrainSpec) -> nn.Module:
    """The loss module; targets were shaped for it by the data module."""
    if train.loss == "CrossEntropyLoss":
        return nn.CrossEntropyLoss(label_smoothing=train.label_smoothing)
    losses: dict[str, type[nn.Module]] = {
        "NLLLoss": nn.NLLLoss,
        "MSELoss": nn.MSELoss,
        "L1Loss": nn.L1Loss,
        "SmoothL1Loss": nn.SmoothL1Loss,
        "BCEWithLogitsLoss": nn.BCEWithLogitsLoss,
    }
    return losses[train.loss]()


@dataclass
class Schedule:
    """A scheduler and when it steps: after every optimizer step, or after every epoch."""

    scheduler: lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau | None
    per_step: bool
    monitor: str | None

    def after_step(self) -> None:
        """Called after each optimizer step."""
        if self.scheduler is not None and self.per_step:
            assert isinstance(self.scheduler, lr_scheduler.LRScheduler)
            self.scheduler.step()

    def after_epoch(self, metrics: dict[str, float]) -> None:
        """Called after each epoch's evaluation."""
        if self.scheduler is None or self.per_step:
            return
        if isinstance(self.scheduler, lr_scheduler.ReduceLROnPlateau):
            assert self.monitor is not None
            self.scheduler.step(metrics[self.monitor])
        else:
            self.scheduler.step()


def make_schedule(
    optimizer: torch.optim.Optimizer, spec: SchedulerSpec | None, *, total_steps: int, epochs: int
) -> Schedule:
    """The spec's scheduler; `total_steps` / `epochs` size OneCycleLR and CosineAnnealingLR."""
    if spec is None:
        return Schedule(None, per_step=False, monitor=None)
    if spec.name == "StepLR":
        sched = lr_scheduler.StepLR(optimizer, step_size=spec.step_size, gamma=spec.gamma)
        return Schedule(sched, per_step=False, monitor=None)
    if spec.name == "CosineAnnealingLR":
        t_max = spec.T_max or max(1, epochs)
        cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=spec.eta_min)
        return Schedule(cosine, per_step=False, monitor=None)
    if spec.name == "OneCycleLR":
        max_lr = spec.max_lr or optimizer.param_groups[0]["lr"]
        one = lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=max(1, total_steps), pct_start=spec.pct_start
        )
        return Schedule(one, per_step=True, monitor=None)
    plateau = lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=spec.mode or "min", factor=spec.factor, patience=spec.patience
    )
    return Schedule(plateau, per_step=False, monitor=spec.monitor)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The first parameter group's learning rate (the one the spec sets)."""
    return float(optimizer.param_groups[0]["lr"])
