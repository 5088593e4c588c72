"""Datasets and loaders, made deterministically from the job's seed.

Targets follow the loss: `CrossEntropyLoss` gets int64 class indices; `MSELoss` on a
classification task gets one-hot float32 rows (so the model's (batch, num_classes)
output is regressed onto the one-hot code); regression targets are float32
(N, output_dim).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from shared.spec import DataSpec

# The synthetic teacher is fixed, so the job seed changes which samples are drawn, not
# which function is learned.
_TEACHER_SEED = 20_240_601
_REGRESSION_NOISE = 0.1


def make_datasets(
    data: DataSpec, *, seed: int, loss: str
) -> tuple[TensorDataset, TensorDataset | None]:
    """(train, validation) for the spec; validation is None when val_fraction is 0."""
    if data.dataset == "digits":
        inputs, labels = _digits(data.image_size)
        targets = _class_targets(labels, 10, loss)
    else:
        inputs, targets = _synthetic(data, seed)
        if data.task == "classification":
            targets = _class_targets(targets, data.num_classes, loss)
    return _split(inputs, targets, data.val_fraction, seed)


def make_loader(
    ds: TensorDataset, *, batch_size: int, shuffle: bool, seed: int, train: bool = False
) -> DataLoader[tuple[torch.Tensor, ...]]:
    """A single-process loader whose shuffling depends only on `seed`.

    For training (`train=True`) a last batch of one sample is dropped: BatchNorm cannot
    train on it, and one sample in an epoch changes nothing else.
    """
    # Its own generator keeps the batch order independent of the global RNG, which
    # model init and dropout also draw from.
    generator = torch.Generator().manual_seed(seed)
    drop_last = train and len(ds) % batch_size == 1 and len(ds) > 1
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=0,
        drop_last=drop_last,
    )


def _digits(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    bunch = load_digits()  # bundled with scikit-learn: no download
    images = torch.as_tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    if image_size != images.shape[-1]:
        size = (image_size, image_size)
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    return images.contiguous(), torch.as_tensor(bunch.target, dtype=torch.int64)


def _teacher(in_features: int, out_features: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(_TEACHER_SEED)
    # Scaled so teacher outputs have unit variance whatever the input width.
    weight = torch.randn(in_features, out_features, generator=generator)
    return weight / math.sqrt(in_features)


def _synthetic(data: DataSpec, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn((data.size, *data.input_shape), generator=generator)
    flat = inputs.flatten(1)
    if data.task == "classification":
        return inputs, (flat @ _teacher(flat.shape[1], data.num_classes)).argmax(dim=1)
    clean = flat @ _teacher(flat.shape[1], data.output_dim)
    return inputs, clean + _REGRESSION_NOISE * torch.randn(clean.shape, generator=generator)


def _class_targets(labels: torch.Tensor, num_classes: int, loss: str) -> torch.Tensor:
    if loss == "MSELoss":
        return F.one_hot(labels, num_classes).to(torch.float32)
    return labels


def _split(
    inputs: torch.Tensor, targets: torch.Tensor, val_fraction: float, seed: int
) -> tuple[TensorDataset, TensorDataset | None]:
    n = inputs.shape[0]
    if val_fraction == 0.0:
        return TensorDataset(inputs, targets), None
    # At least one sample on each side, however small the fraction or the data.
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, train = order[:n_val], order[n_val:]
    return TensorDataset(inputs[train], targets[train]), TensorDataset(inputs[val], targets[val])
