"""The job spec: what a user may ask for, checked by pydantic before anything is built.

Shapes and parameter counts are checked separately by a dry run on the meta device
(`shared.netspec.dry_run`); this module only checks types, ranges and size limits.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Child names become attribute names and state_dict key parts: keep them plain.
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_LAYERS = 256
MAX_DEPTH = 8
# Synthetic data lives in worker memory as float32: 50M values is 200 MB.
MAX_DATASET_VALUES = 50_000_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LayerSpec(BaseModel):
    """One `torch.nn` module: its class name, an optional child name, constructor kwargs.

    Extra keys are the constructor's keyword arguments, named as torch names them
    (`{"type": "Linear", "in_features": 784, "out_features": 10}`). A `Sequential`
    carries its children in `layers`.
    """

    model_config = ConfigDict(extra="allow")

    type: str = Field(min_length=1, max_length=64)
    name: str | None = None
    layers: list[LayerSpec] | None = None

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME_RE.match(value):
            raise ValueError("must be a Python identifier of at most 64 characters")
        return value

    @model_validator(mode="after")
    def _children_only_for_sequential(self) -> LayerSpec:
        if self.type == "Sequential":
            if not self.layers:
                raise ValueError("a Sequential needs a non-empty 'layers' list")
        elif self.layers is not None:
            raise ValueError(f"'layers' is only allowed on Sequential, not on {self.type}")
        return self

    def kwargs(self) -> dict[str, Any]:
        """Constructor keyword arguments (everything but type, name and layers)."""
        return dict(self.model_extra or {})


class ModelSpec(_Strict):
    """Either a named preset from the seed notes, or a list of layers run in order."""

    preset: Literal["neural_network", "lenet", "tiny_model", "my_model"] | None = None
    layers: list[LayerSpec] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSpec:
        if (self.preset is None) == (self.layers is None):
            raise ValueError("give exactly one of 'preset' or 'layers'")
        if self.layers is not None:
            if not self.layers:
                raise ValueError("'layers' must not be empty")
            _check_tree(self.layers)
        return self


def _check_tree(layers: list[LayerSpec]) -> None:
    count = 0

    def walk(items: list[LayerSpec], depth: int) -> None:
        nonlocal count
        if depth > MAX_DEPTH:
            raise ValueError(f"layers nest deeper than {MAX_DEPTH} levels")
        for item in items:
            count += 1
            if item.layers:
                walk(item.layers, depth + 1)

    walk(layers, 1)
    if count > MAX_LAYERS:
        raise ValueError(f"{count} layers in all; at most {MAX_LAYERS} are allowed")


class DataSpec(_Strict):
    """Where the batches come from.

    `digits`: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes),
    shaped (1, S, S) with S = `image_size` (8, or resized to 28 / 32), scaled to [0, 1].
    `synthetic`: generated under the job's seed; `input_shape` per sample,
    `task` classification (`num_classes` labels) or regression (`output_dim` targets).
    """

    dataset: Literal["digits", "synthetic"]
    val_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    image_size: Literal[8, 28, 32] = 8
    task: Literal["classification", "regression"] = "classification"
    input_shape: list[int] = Field(default_factory=lambda: [10], min_length=1, max_length=4)
    size: int = Field(default=1024, ge=2, le=200_000)
    num_classes: int = Field(default=10, ge=2, le=10_000)
    output_dim: int = Field(default=1, ge=1, le=10_000)

    @field_validator("input_shape")
    @classmethod
    def _positive_dims(cls, value: list[int]) -> list[int]:
        if any(d < 1 or d > 4096 for d in value):
            raise ValueError("every dimension must be between 1 and 4096")
        numel = 1
        for d in value:
            numel *= d
        if numel > 1_000_000:
            raise ValueError("a sample may hold at most 1,000,000 values")
        return value

    @model_validator(mode="after")
    def _digits_is_classification(self) -> DataSpec:
        if self.dataset == "digits" and self.task != "classification":
            raise ValueError("the digits dataset is a classification task")
        return self

    @model_validator(mode="after")
    def _fits_in_memory(self) -> DataSpec:
        if self.dataset != "synthetic":
            return self
        numel = 1
        for d in self.input_shape:
            numel *= d
        width = self.num_classes if self.task == "classification" else self.output_dim
        for what, values in (
            ("size x input_shape", self.size * numel),
            ("input_shape x targets (the teacher)", numel * width),
        ):
            if values > MAX_DATASET_VALUES:
                raise ValueError(
                    f"{what} is {values:,} values; at most {MAX_DATASET_VALUES:,} are allowed"
                )
        return self


class OptimizerSpec(_Strict):
    """torch.optim.SGD or torch.optim.Adam with their usual settings."""

    name: Literal["SGD", "Adam"] = "SGD"
    lr: float = Field(default=0.01, gt=0.0, le=10.0)
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _consistent(self) -> OptimizerSpec:
        if self.nesterov and (self.name != "SGD" or self.momentum <= 0.0):
            raise ValueError("nesterov needs SGD with momentum > 0")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError("betas must lie in [0, 1)")
        return self


class TrainSpec(_Strict):
    """How long and how to train: the seed's zero_grad / forward / loss / backward / step.

    Training stops at whichever of `epochs` and `max_steps` comes first.
    """

    epochs: int | None = Field(default=None, ge=1, le=1000)
    max_steps: int | None = Field(default=None, ge=1, le=10_000_000)
    batch_size: int = Field(default=64, ge=1, le=8192)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    loss: Literal["CrossEntropyLoss", "MSELoss"] = "CrossEntropyLoss"
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _has_a_length(self) -> TrainSpec:
        # max_steps alone runs as many epochs as it takes; neither means one epoch.
        if self.epochs is None and self.max_steps is None:
            self.epochs = 1
        return self


HookKind = Literal["backward", "param_grad"]


def _all_hook_kinds() -> list[HookKind]:
    return ["backward", "param_grad"]


class HookSpec(_Strict):
    """Which module hooks record statistics, and how often.

    `backward`: gradient w.r.t. the output of every module that owns parameters.
    `param_grad`: gradient of every parameter after backward.
    """

    every_n_steps: int = Field(default=1, ge=1, le=1_000_000)
    kinds: list[HookKind] = Field(default_factory=_all_hook_kinds)


class JobSpec(_Strict):
    """A training job: model + data + training + hooks."""

    model: ModelSpec
    data: DataSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    hooks: HookSpec = Field(default_factory=HookSpec)

    @model_validator(mode="after")
    def _loss_fits_task(self) -> JobSpec:
        regression = self.data.dataset == "synthetic" and self.data.task == "regression"
        if regression and self.train.loss != "MSELoss":
            raise ValueError("a regression dataset needs train.loss 'MSELoss'")
        return self


def sample_shape(data: DataSpec) -> tuple[int, ...]:
    """Shape of one input sample (no batch dimension)."""
    if data.dataset == "digits":
        return (1, data.image_size, data.image_size)
    return tuple(data.input_shape)


def output_width(spec: JobSpec) -> int:
    """How many values the model must output per sample for the job's loss and targets."""
    data = spec.data
    if data.dataset == "digits":
        return 10
    return data.num_classes if data.task == "classification" else data.output_dim
