"""TransformSpec lists as torchvision.transforms.v2 ops on image tensors (C, H, W) in [0, 1].

Training samples get every transform, in order; validation, test and inference get the
deterministic ones (Resize, CenterCrop, Normalize), in the same order, with RandomCrop
as a CenterCrop of the same size: without it evaluation images would keep their size
while the model learned on crops (sample_shape promises the cropped shape everywhere).

Random transforms draw from torch's global CPU generator, which model init and dropout
share; `apply_seeded` runs them on a forked copy reseeded per sample, so a sample's
augmentation depends only on the seed it is given (see `data.make_loader`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torchvision.transforms import v2

from shared.spec import DataSpec, TransformSpec

Transform = Callable[[torch.Tensor], torch.Tensor]


def train_transform(data: DataSpec) -> Transform | None:
    """All of the spec's transforms, for training samples; None when there are none."""
    return _compose(data.transforms)


def eval_transform(data: DataSpec) -> Transform | None:
    """The deterministic transforms, for validation, test and inference; None if none.

    RandomCrop becomes CenterCrop of the same size (padding only moves a random crop);
    RandomHorizontalFlip is left out. Works on one image (C, H, W) or a batch (N, C, H, W).
    """
    return _compose(
        [_deterministic(t) for t in data.transforms if t.type != "RandomHorizontalFlip"]
    )


def has_random(data: DataSpec) -> bool:
    """Whether training samples get random augmentation."""
    return any(t.is_random for t in data.transforms)


def apply_seeded(transform: Transform, image: torch.Tensor, seed: int) -> torch.Tensor:
    """`transform(image)` with the global CPU generator seeded to `seed`, then restored."""
    with _cpu_rng(seed):
        return transform(image)


@contextmanager
def _cpu_rng(seed: int) -> Iterator[None]:
    # Only the CPU generator: torch.manual_seed would also reseed CUDA, whose dropout
    # masks the training step draws in this very process when num_workers is 0.
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def _deterministic(t: TransformSpec) -> TransformSpec:
    if t.type == "RandomCrop":
        return TransformSpec(type="CenterCrop", size=t.size)
    return t


def _compose(specs: Sequence[TransformSpec]) -> Transform | None:
    if not specs:
        return None
    composed: Transform = v2.Compose([_op(t) for t in specs])
    return composed


def _op(t: TransformSpec) -> v2.Transform:
    if t.type == "Normalize":
        assert t.mean is not None and t.std is not None  # the spec validator insists
        return v2.Normalize(mean=t.mean, std=t.std)
    if t.type == "RandomHorizontalFlip":
        return v2.RandomHorizontalFlip(p=t.p)
    assert t.size is not None  # Resize and the crops need a size (spec validator)
    if t.type == "Resize":
        # Always square: sample_shape() promises (C, size, size) to the dry run.
        return v2.Resize((t.size, t.size), antialias=True)
    if t.type == "CenterCrop":
        return v2.CenterCrop(t.size)
    return v2.RandomCrop(t.size, padding=t.padding or None)
