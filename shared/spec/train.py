"""How to train: optimizer, schedule, loss, clipping, accumulation, stopping, precision."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from shared.spec.base import Strict

LossName = Literal[
    "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "SmoothL1Loss", "BCEWithLogitsLoss"
]
CLASS_INDEX_LOSSES = ("CrossEntropyLoss", "NLLLoss")  # targets are class indices
REGRESSION_LOSSES = ("MSELoss", "L1Loss", "SmoothL1Loss")


# Epoch metrics early stopping and ReduceLROnPlateau can watch.
Monitor = Literal["train_loss", "val_loss", "val_accuracy"]


def default_mode(monitor: str) -> Literal["min", "max"]:
    """Accuracy improves upwards, losses downwards."""
    return "max" if monitor.endswith("accuracy") else "min"


class OptimizerSpec(Strict):
    """torch.optim.SGD, Adam, AdamW or RMSprop with their usual settings."""

    name: Literal["SGD", "Adam", "AdamW", "RMSprop"] = "SGD"
    lr: float = Field(default=0.01, gt=0.0, le=10.0)
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0, description="SGD, RMSprop")
    nesterov: bool = False
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0.0, le=1.0)
    alpha: float = Field(default=0.99, gt=0.0, lt=1.0, description="RMSprop smoothing")

    @model_validator(mode="after")
    def _consistent(self) -> OptimizerSpec:
        if self.nesterov and (self.name != "SGD" or self.momentum <= 0.0):
            raise ValueError("nesterov needs SGD with momentum > 0")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError("betas must lie in [0, 1)")
        return self


class SchedulerSpec(Strict):
    """A torch.optim.lr_scheduler; the learning rate is logged as metric train/lr.

    StepLR, CosineAnnealingLR and ReduceLROnPlateau step once per epoch (the last one on
    `monitor`); OneCycleLR steps once per optimizer step over the whole run.
    """

    name: Literal["StepLR", "CosineAnnealingLR", "OneCycleLR", "ReduceLROnPlateau"]
    step_size: int = Field(default=1, ge=1, le=10_000, description="StepLR: epochs")
    gamma: float = Field(default=0.1, gt=0.0, le=1.0, description="StepLR")
    T_max: int | None = Field(default=None, ge=1, le=100_000, description="Cosine: epochs")
    eta_min: float = Field(default=0.0, ge=0.0, le=10.0, description="Cosine")
    max_lr: float | None = Field(default=None, gt=0.0, le=10.0, description="OneCycle")
    pct_start: float = Field(default=0.3, gt=0.0, lt=1.0, description="OneCycle")
    factor: float = Field(default=0.1, gt=0.0, lt=1.0, description="ReduceLROnPlateau")
    patience: int = Field(default=10, ge=0, le=10_000, description="ReduceLROnPlateau")
    monitor: Monitor = Field(default="val_loss", description="ReduceLROnPlateau: epoch metric")
    mode: Literal["min", "max"] | None = Field(
        default=None, description="default: max for val_accuracy, else min"
    )

    @model_validator(mode="after")
    def _mode_follows_monitor(self) -> SchedulerSpec:
        self.mode = self.mode or default_mode(self.monitor)
        return self


class GradClipSpec(Strict):
    """Clip gradients after backward: by total norm (`max_norm`) or by value (`max_value`)."""

    max_norm: float | None = Field(default=None, gt=0.0, le=1e6)
    max_value: float | None = Field(default=None, gt=0.0, le=1e6)
    norm_type: float = Field(default=2.0, ge=1.0, le=1e6)

    @model_validator(mode="after")
    def _exactly_one(self) -> GradClipSpec:
        if (self.max_norm is None) == (self.max_value is None):
            raise ValueError("give exactly one of 'max_norm' or 'max_value'")
        return self


class EarlyStoppingSpec(Strict):
    """Stop when an epoch metric has not improved by `min_delta` for `patience` epochs."""

    monitor: Monitor = "val_loss"
    mode: Literal["min", "max"] | None = Field(
        default=None, description="default: max for val_accuracy, else min"
    )
    patience: int = Field(default=3, ge=1, le=1000)
    min_delta: float = Field(default=0.0, ge=0.0, le=1e6)

    @model_validator(mode="after")
    def _mode_follows_monitor(self) -> EarlyStoppingSpec:
        self.mode = self.mode or default_mode(self.monitor)
        return self


class DistributedSpec(Strict):
    """Data parallelism with torch.distributed: `world_size` processes, each training a
    replica (DistributedDataParallel) on its share of every batch.

    `train.batch_size` is each process's batch: a step trains on `batch_size x world_size`
    samples. `nodes` spreads the processes over that many workers (hosts), world_size /
    nodes on each. `backend` "auto" is nccl on CUDA and gloo on the CPU.
    """

    world_size: int = Field(default=1, ge=1, le=1024, description="training processes in all")
    nodes: int = Field(default=1, ge=1, le=128, description="workers the processes spread over")
    backend: Literal["auto", "gloo", "nccl"] = "auto"

    @model_validator(mode="after")
    def _whole_nodes(self) -> DistributedSpec:
        if self.world_size % self.nodes:
            raise ValueError(
                f"world_size {self.world_size} does not split over {self.nodes} nodes: "
                "each node runs world_size / nodes processes"
            )
        return self

    @property
    def per_node(self) -> int:
        """Processes on each node."""
        return self.world_size // self.nodes


class TrainSpec(Strict):
    """How long and how to train: the seed's zero_grad / forward / loss / backward / step.

    Training stops at whichever of `epochs` and `max_steps` comes first (or early).
    """

    epochs: int | None = Field(default=None, ge=1, le=1000)
    max_steps: int | None = Field(default=None, ge=1, le=10_000_000)
    batch_size: int = Field(default=64, ge=1, le=8192)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    scheduler: SchedulerSpec | None = None
    loss: LossName = "CrossEntropyLoss"
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0, description="CrossEntropyLoss")
    grad_clip: GradClipSpec | None = None
    accumulate_steps: int = Field(
        default=1, ge=1, le=1024, description="micro-batches whose gradients add up per step"
    )
    early_stopping: EarlyStoppingSpec | None = None
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        default="fp32", description="autocast dtype on CUDA (fp16 with a GradScaler)"
    )
    num_workers: int = Field(default=0, ge=0, le=16, description="DataLoader worker processes")
    checkpoint_every_steps: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="a resumable checkpoint every N steps (epoch ends always take one)",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    distributed: DistributedSpec | None = Field(
        default=None, description="data-parallel training over several processes / hosts"
    )

    @property
    def world_size(self) -> int:
        """Training processes: 1 unless `distributed` asks for more."""
        return self.distributed.world_size if self.distributed is not None else 1

    @property
    def global_batch_size(self) -> int:
        """Samples per micro-batch over every process (batch_size x world_size)."""
        return self.batch_size * self.world_size

    @model_validator(mode="after")
    def _consistent(self) -> TrainSpec:
        # max_steps alone runs as many epochs as it takes; neither means one epoch.
        if self.epochs is None and self.max_steps is None:
            self.epochs = 1
        if self.label_smoothing and self.loss != "CrossEntropyLoss":
            raise ValueError("label_smoothing is a CrossEntropyLoss setting")
        if self.precision != "fp32" and self.device != "cuda":
            # "auto" may land on a CPU worker, which cannot autocast to half precision.
            raise ValueError(f"precision {self.precision!r} is autocast on CUDA: set device 'cuda'")
        distributed = self.distributed
        if distributed is not None and distributed.backend == "nccl" and self.device != "cuda":
            raise ValueError("distributed.backend 'nccl' runs on CUDA: set device 'cuda'")
        return self
