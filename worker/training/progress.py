"""Where a fit stands: the counters and per-epoch values the loop carries from step to step."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from worker.training.checkpoint import CheckpointBlob


@dataclass
class Progress:
    """Where a fit stands; what its FitResult reports and a resumable checkpoint keeps."""

    step: int = 0
    epoch: int = 0  # epochs begun
    epoch_step: int = 0  # steps taken in the current epoch; 0 between epochs
    epoch_losses: list[float] = field(default_factory=list)  # this epoch's finite losses
    # The training loader's generator as the current epoch began: a fit resumed part-way
    # into the epoch draws the epoch's order again from it.
    epoch_start: torch.Tensor | None = None
    loss: float = math.nan  # the last step's
    metrics: dict[str, float] = field(default_factory=dict)  # the last evaluated epoch's
    logged_lr: float = math.nan
    stopped: bool = False  # a callback asked to stop
    stopped_early: bool = False  # early stopping ended training
    suspended: bool = False  # a callback asked to checkpoint and stop, to resume later
    last: CheckpointBlob | None = None  # the last epoch checkpoint
    best_model_state: bytes | None = None  # early stopping's best epoch (safetensors)
    first_step: int = 0  # where this attempt began: 0, or the step it resumed from
