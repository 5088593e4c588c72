"""Datasets and loaders, made deterministically from the job's seed.

Targets follow the loss: `CrossEntropyLoss` / `NLLLoss` get int64 class indices; the
other losses on a classification task get one-hot float32 rows (so the model's
(batch, num_classes) output is regressed onto the one-hot code); regression targets are
float32 (N, output_dim). Datasets, splits and files: `datasets`, `sources`, `shared.dataset_files`;
transforms: `transforms`.

Random transforms are seeded per sample, and the seeds come from the loader: for a
dataset that augments, `make_loader`'s sampler draws one seed per sample per epoch from
the loader's own generator and sends it with the index. Augmentation therefore depends
only on the loader's `seed` and the epoch, not on `num_workers` or on which worker
process loads the sample, and it leaves the global RNG (dropout) alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from shared.dataset_files import check_data_available, check_transforms
from shared.steps import drops_last_batch, rank_share
from worker.training.datasets import Sample, SplitDataset, Splits, make_datasets
from worker.training.transforms import eval_transform

__all__ = [
    "SplitDataset",
    "Splits",
    "check_data_available",
    "check_transforms",
    "eval_transform",
    "make_datasets",
    "make_loader",
]


def make_loader(
    ds: Dataset[Sample],
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    train: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader[Sample]:
    """A loader whose order and augmentation depend only on `seed`.

    For training (`train=True`) a last batch of one sample is dropped
    (`shared.steps.drops_last_batch`, which the step count follows). `pin_memory` is
    ignored without CUDA. With `world_size` > 1 the loader is process `rank`'s share of
    each batch of `batch_size x world_size` (see ResumableSampler).
    """
    # Its own generator keeps the batch order independent of the global RNG, which
    # model init and dropout also draw from.
    generator = torch.Generator().manual_seed(seed)
    n = len(ds)  # type: ignore[arg-type]
    drop_last = train and drops_last_batch(rank_share(n, world_size), batch_size)
    inner: Sampler[Any]
    if isinstance(ds, SplitDataset) and ds.augments:
        inner = SeededSampler(n, shuffle=shuffle, generator=generator)
    elif shuffle:  # what DataLoader(shuffle=True, generator=...) builds: the same draws
        inner = RandomSampler(ds, generator=generator)  # type: ignore[arg-type]
    else:
        inner = SequentialSampler(ds)  # type: ignore[arg-type]
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=ResumableSampler(inner, rank=rank, world_size=world_size),
        generator=generator,
        # Fresh workers every epoch: persistent ones would skip the per-epoch seed draw
        # and change the order, so num_workers could change the training run.
        num_workers=num_workers,
        pin_memory=pin_memory and torch.cuda.is_available(),
        drop_last=drop_last,
    )


class ResumableSampler(Sampler[Any]):
    """Another sampler's order (or process `rank`'s share of it), with the first `skip`
    items of the next pass left out.

    A fit resumed part-way into an epoch puts the loader's generator back to its state at
    that epoch's start and skips the samples the epoch had already taken: the inner
    sampler makes exactly the draws it made then (the order, augmentation seeds, and the
    trailing draw at its end), and no sample is loaded just to be thrown away.

    With `world_size` > 1 every process draws the same order from the same seed and
    takes every `world_size`-th item from position `rank` (the order padded with its first
    items to a multiple of `world_size`, as torch's DistributedSampler pads). Batch k of
    every process together is then exactly batch k of a single process whose batch is
    `world_size` times larger, in the order that process draws: a distributed job takes
    the same steps as its single-process twin, which DistributedSampler's own per-epoch
    shuffle (seed + epoch) would not give.
    """

    def __init__(self, inner: Sampler[Any], *, rank: int = 0, world_size: int = 1) -> None:
        self.inner = inner
        self.rank, self.world_size = rank, world_size
        self.skip = 0

    def __len__(self) -> int:
        return rank_share(len(self.inner), self.world_size)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        items = iter(self.inner) if self.world_size == 1 else iter(self._share())
        skip, self.skip = self.skip, 0
        for _ in range(skip):
            next(items, None)
        yield from items

    def _share(self) -> list[Any]:
        order = list(self.inner)  # the whole pass: the generator ends where a single process's does
        padded = order + order[: len(self) * self.world_size - len(order)]
        return padded[self.rank :: self.world_size]


class SeededSampler(Sampler[tuple[int, int]]):
    """(index, augmentation seed) pairs, both drawn from the loader's generator each epoch."""

    def __init__(self, n: int, *, shuffle: bool, generator: torch.Generator) -> None:
        self.n, self.shuffle, self.generator = n, shuffle, generator

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = (
            torch.randperm(self.n, generator=self.generator).tolist()
            if self.shuffle
            else list(range(self.n))
        )
        seeds = torch.randint(0, 2**62, (self.n,), generator=self.generator).tolist()
        yield from zip(order, seeds, strict=True)
