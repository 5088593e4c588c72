"""A DataSpec's train / validation / test datasets, split deterministically under the seed.

digits, synthetic and fake: one permutation of all samples under the seed gives the
validation samples first, then the test samples, then the training rest (so with no test
split the validation set is the same as before test splits existed). mnist,
fashion_mnist and cifar10: the official test set is always the test split (test_fraction
is not used) and val_fraction of the official training set, permuted under the seed, is
the validation split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from shared.dataset_files import check_data_available
from shared.errors import SpecError
from shared.spec import DataSpec, class_count
from shared.spec.data import IMAGE_DATASETS, split_counts
from shared.spec.train import CLASS_INDEX_LOSSES
from worker.training import sources
from worker.training.transforms import Transform, apply_seeded, eval_transform, has_random
from worker.training.transforms import train_transform as full_transform

Sample = tuple[torch.Tensor, torch.Tensor]
# A plain index, or (index, augmentation seed) as data.make_loader's sampler yields.
Item = int | tuple[int, int]


class SplitDataset(Dataset[Sample]):
    """Some rows of (inputs, labels): uint8 images become float in [0, 1], then transformed.

    Class labels become one-hot float32 rows when `one_hot` gives the class count.
    Random transforms are seeded per sample: by the seed that comes with the index, or
    for a plain index by `seed` and the index.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        indices: list[int] | None = None,
        *,
        one_hot: int | None = None,
        transform: Transform | None = None,
        random: bool = False,
        seed: int = 0,
    ) -> None:
        self.inputs, self.labels = inputs, labels
        self.indices = indices
        self.one_hot = one_hot
        self.transform = transform
        self.augments = random and transform is not None
        self.seed = seed

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else self.inputs.shape[0]

    def __getitem__(self, item: Item) -> Sample:
        index, sample_seed = item if isinstance(item, tuple) else (item, None)
        row = self.indices[index] if self.indices is not None else index
        x, y = self.inputs[row], self.labels[row]
        if x.dtype == torch.uint8:
            x = x.to(torch.float32).div_(255.0)
        if self.one_hot is not None:
            y = F.one_hot(y, self.one_hot).to(torch.float32)
        if self.transform is None:
            return x, y
        if not self.augments:
            return self.transform(x), y
        if sample_seed is None:
            sample_seed = (self.seed * 1_000_003 + index) % 2**62
        return apply_seeded(self.transform, x, sample_seed), y


@dataclass
class Splits:
    """The datasets of one job; `val` and `test` are None when the spec has none."""

    train: SplitDataset
    val: SplitDataset | None
    test: SplitDataset | None


def make_datasets(data: DataSpec, *, seed: int, loss: str, data_dir: Path | None) -> Splits:
    """Train, validation and test datasets yielding (input, target) as the loss expects.

    Targets: CrossEntropyLoss / NLLLoss get int64 class indices; the other losses on a
    classification task get one-hot float32 rows; regression targets are float32
    (N, output_dim). Raises SpecError when files are missing or do not parse.
    """
    check_data_available(data, data_dir)
    classes = class_count(data)
    one_hot = classes if classes is not None and loss not in CLASS_INDEX_LOSSES else None
    random = has_random(data)
    train_tf, eval_tf = full_transform(data), eval_transform(data)

    def split(
        inputs: torch.Tensor, labels: torch.Tensor, rows: list[int] | None, *, train: bool = False
    ) -> SplitDataset:
        transform = train_tf if train else eval_tf
        return SplitDataset(
            inputs, labels, rows, one_hot=one_hot, transform=transform,
            random=train and random, seed=seed,
        )  # fmt: skip

    test: SplitDataset | None
    if data.dataset in IMAGE_DATASETS:
        assert data_dir is not None  # check_data_available insists
        inputs, labels = sources.stored(data.dataset, data_dir, train=True)
        test_inputs, test_labels = sources.stored(data.dataset, data_dir, train=False)
        train_rows, val_rows, _ = split_rows(inputs.shape[0], data.val_fraction, 0.0, seed)
        test = split(test_inputs, test_labels, None)
    else:
        inputs, labels = sources.generated(data, seed)
        train_rows, val_rows, test_rows = split_rows(
            inputs.shape[0], data.val_fraction, data.test_fraction, seed
        )
        test = split(inputs, labels, test_rows) if test_rows is not None else None
    val = split(inputs, labels, val_rows) if val_rows is not None else None
    return Splits(train=split(inputs, labels, train_rows, train=True), val=val, test=test)


def split_rows(
    n: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[int], list[int] | None, list[int] | None]:
    """(train, val, test) rows of one seeded permutation; val / test None at fraction 0."""
    n_val, n_test = split_counts(n, val_fraction, test_fraction)
    if test_fraction > 0.0 and n_test == 0:
        problem = f"{n} samples are too few for training, validation and test splits"
        raise SpecError(
            f"data.test_fraction: {problem}",
            details=[{"loc": "data.test_fraction", "msg": problem}],
        )
    if n_val == n_test == 0:
        return list(range(n)), None, None  # nothing held out: keep the generated order
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    val = order[:n_val] if n_val else None
    test = order[n_val : n_val + n_test] if n_test else None
    return order[n_val + n_test :], val, test
