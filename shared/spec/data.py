"""Where the batches come from: a named dataset, its splits and its transforms."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from shared.spec.base import Strict

# Synthetic data lives in worker memory as float32: 50M values is 200 MB.
MAX_DATASET_VALUES = 50_000_000
IMAGE_DATASETS = ("mnist", "fashion_mnist", "cifar10")

DatasetName = Literal["digits", "mnist", "fashion_mnist", "cifar10", "fake", "synthetic"]

# (channels, height, width) and class count of the datasets with a fixed shape.
FIXED_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "mnist": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
}


class TransformSpec(Strict):
    """One torchvision transform, applied to image tensors (C, H, W) in [0, 1].

    Random ones (RandomCrop, RandomHorizontalFlip) run on training batches only;
    validation, test and inference get the deterministic rest, in the same order.
    """

    type: Literal["Resize", "CenterCrop", "RandomCrop", "RandomHorizontalFlip", "Normalize"]
    size: int | None = Field(default=None, ge=1, le=1024, description="Resize / *Crop: side")
    padding: int = Field(default=0, ge=0, le=64, description="RandomCrop")
    p: float = Field(default=0.5, ge=0.0, le=1.0, description="RandomHorizontalFlip")
    mean: list[float] | None = Field(default=None, min_length=1, max_length=4)
    std: list[float] | None = Field(default=None, min_length=1, max_length=4)

    @model_validator(mode="after")
    def _arguments_for_type(self) -> TransformSpec:
        if self.type in ("Resize", "CenterCrop", "RandomCrop") and self.size is None:
            raise ValueError(f"{self.type} needs 'size'")
        if self.type == "Normalize":
            if self.mean is None or self.std is None or len(self.mean) != len(self.std):
                raise ValueError("Normalize needs 'mean' and 'std' of the same length")
            if any(s <= 0 for s in self.std):
                raise ValueError("Normalize std values must be positive")
        return self

    @property
    def is_random(self) -> bool:
        """Applied to training batches only."""
        return self.type.startswith("Random")


class DataSpec(Strict):
    """The dataset, its split and its transforms.

    `digits`: scikit-learn's bundled 8x8 digits (1797 images, 10 classes), (1, S, S) with
    S = `image_size`. `mnist` / `fashion_mnist` / `cifar10`: read with torchvision from
    TRAINYARD_DATA_DIR (never downloaded); their official test set is the test split.
    `fake`: torchvision FakeData of `input_shape` (C, H, W) images. `synthetic`: generated
    under the seed; `task` classification or regression; `input_kind` "tokens" gives
    integer ids in [0, vocab_size) for models that start with an Embedding.
    """

    dataset: DatasetName
    val_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    test_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    image_size: Literal[8, 28, 32] = 8
    task: Literal["classification", "regression"] = "classification"
    input_shape: list[int] = Field(default_factory=lambda: [10], min_length=1, max_length=4)
    input_kind: Literal["float", "tokens"] = "float"
    vocab_size: int = Field(default=100, ge=2, le=1_000_000)
    size: int = Field(default=1024, ge=2, le=200_000)
    num_classes: int = Field(default=10, ge=2, le=10_000)
    output_dim: int = Field(default=1, ge=1, le=10_000)
    transforms: list[TransformSpec] = Field(default_factory=list, max_length=16)

    @field_validator("input_shape")
    @classmethod
    def _positive_dims(cls, value: list[int]) -> list[int]:
        if any(d < 1 or d > 4096 for d in value):
            raise ValueError("every dimension must be between 1 and 4096")
        if math.prod(value) > 1_000_000:
            raise ValueError("a sample may hold at most 1,000,000 values")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DataSpec:
        if self.dataset != "synthetic" and self.task != "classification":
            raise ValueError(f"the {self.dataset} dataset is a classification task")
        if self.input_kind == "tokens" and self.dataset != "synthetic":
            raise ValueError("input_kind 'tokens' is only for the synthetic dataset")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must leave training data")
        if self.dataset == "fake" and len(self.input_shape) != 3:
            raise ValueError("fake images need input_shape [channels, height, width]")
        if self.transforms and not self.is_image:
            raise ValueError("transforms apply to image datasets (digits, mnist, ..., fake)")
        return self

    @model_validator(mode="after")
    def _enough_training_samples(self) -> DataSpec:
        n = POOL_SIZES.get(self.dataset, self.size)
        if self.dataset not in IMAGE_DATASETS and self.test_fraction > 0.0:
            _, n_test = split_counts(n, self.val_fraction, self.test_fraction)
            if n_test == 0:
                raise ValueError(f"{n} samples are too few for training, validation and test")
        if train_size(self) < 2:
            raise ValueError(f"{n} samples leave fewer than 2 for training: raise 'size'")
        return self

    @model_validator(mode="after")
    def _fits_in_memory(self) -> DataSpec:
        if self.dataset not in ("synthetic", "fake"):
            return self
        numel = math.prod(self.input_shape)
        checks = [("size x input_shape", self.size * numel)]
        if self.dataset == "synthetic":
            width = self.num_classes if self.task == "classification" else self.output_dim
            checks.append(("input_shape x targets (the teacher)", numel * width))
        for what, values in checks:
            if values > MAX_DATASET_VALUES:
                raise ValueError(
                    f"{what} is {values:,} values; at most {MAX_DATASET_VALUES:,} are allowed"
                )
        return self

    @property
    def is_image(self) -> bool:
        """Samples are (C, H, W) images that transforms can act on."""
        return self.dataset != "synthetic"


# Samples in the pool that train / val (/ test) are cut from; the official test sets of
# mnist, fashion_mnist and cifar10 are separate.
POOL_SIZES = {"digits": 1797, "mnist": 60_000, "fashion_mnist": 60_000, "cifar10": 50_000}


def split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(n_val, n_test) of a pool of n: at least one sample in every split asked for."""

    def at_least_one(fraction: float) -> int:
        return 0 if fraction == 0.0 else max(1, round(n * fraction))

    n_val = min(at_least_one(val_fraction), n - 1)
    n_test = min(at_least_one(test_fraction), n - 1 - n_val)
    return n_val, n_test


def train_size(data: DataSpec) -> int:
    """How many samples the training split holds."""
    n = POOL_SIZES.get(data.dataset, data.size)
    official_test = data.dataset in IMAGE_DATASETS
    n_val, n_test = split_counts(n, data.val_fraction, 0.0 if official_test else data.test_fraction)
    return n - n_val - n_test


def raw_sample_shape(data: DataSpec) -> tuple[int, ...]:
    """Shape of one sample as the dataset yields it, before transforms."""
    if data.dataset == "digits":
        return (1, data.image_size, data.image_size)
    if data.dataset in FIXED_SHAPES:
        return FIXED_SHAPES[data.dataset][0]
    return tuple(data.input_shape)


def sample_shape(data: DataSpec) -> tuple[int, ...]:
    """Shape of one model input sample (no batch dimension), after the transforms."""
    shape = raw_sample_shape(data)
    for t in data.transforms:
        if t.type in ("Resize", "CenterCrop", "RandomCrop") and t.size is not None:
            shape = (shape[0], t.size, t.size)
    return shape


def class_count(data: DataSpec) -> int | None:
    """Number of classes of a classification dataset (None for regression)."""
    if data.task != "classification":
        return None
    if data.dataset in FIXED_SHAPES:
        return FIXED_SHAPES[data.dataset][1]
    if data.dataset == "digits":
        return 10
    return data.num_classes
