"""Transforms: shapes, the deterministic eval subset, checks, seeded random augmentation."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torchvision.transforms import v2

from shared.errors import SpecError
from shared.spec import DataSpec
from shared.spec.data import sample_shape
from worker.training.data import (
    SplitDataset,
    check_data_available,
    eval_transform,
    make_datasets,
    make_loader,
)
from worker.training.sources import digits


def spec(*transforms: dict[str, Any], **fields: Any) -> DataSpec:
    return DataSpec.model_validate({"dataset": "digits", "transforms": list(transforms), **fields})


AUGMENT = (
    {"type": "RandomCrop", "size": 8, "padding": 2},
    {"type": "RandomHorizontalFlip", "p": 0.5},
    {"type": "Normalize", "mean": [0.5], "std": [0.25]},
)


def train_of(data: DataSpec, seed: int = 0) -> SplitDataset:
    return make_datasets(data, seed=seed, loss="CrossEntropyLoss", data_dir=None).train


def epoch(ds: SplitDataset, seed: int, num_workers: int = 0) -> list[torch.Tensor]:
    loader = make_loader(ds, batch_size=64, shuffle=True, seed=seed, num_workers=num_workers)
    return [x for x, _ in loader]


@pytest.mark.parametrize(
    ("transforms", "shape"),
    [
        ([{"type": "Resize", "size": 16}], (1, 16, 16)),
        ([{"type": "CenterCrop", "size": 6}], (1, 6, 6)),
        ([{"type": "RandomCrop", "size": 5, "padding": 1}], (1, 5, 5)),
        ([{"type": "Resize", "size": 12}, {"type": "RandomCrop", "size": 10}], (1, 10, 10)),
    ],
)
def test_shapes_follow_the_transforms_as_sample_shape_promises(
    transforms: list[dict[str, Any]], shape: tuple[int, ...]
) -> None:
    data = spec(*transforms, test_fraction=0.1)
    splits = make_datasets(data, seed=0, loss="CrossEntropyLoss", data_dir=None)
    assert splits.val is not None and splits.test is not None
    for ds in (splits.train, splits.val, splits.test):
        assert ds[0][0].shape == shape == sample_shape(data)


def test_eval_transform_is_the_deterministic_subset_in_order() -> None:
    data = spec({"type": "Resize", "size": 10}, *AUGMENT, {"type": "CenterCrop", "size": 6})
    transform = eval_transform(data)
    assert isinstance(transform, v2.Compose)
    kinds = [type(t) for t in transform.transforms]
    # RandomCrop(8) turns into CenterCrop(8), so evaluation images get the training shape.
    assert kinds == [v2.Resize, v2.CenterCrop, v2.Normalize, v2.CenterCrop]
    assert list(transform.transforms[1].size) == [8, 8]
    assert eval_transform(spec(AUGMENT[1])) is None
    assert eval_transform(spec()) is None
    batch = transform(torch.rand(4, 1, 8, 8))  # a batch, as inference would pass
    assert batch.shape == (4, 1, 6, 6)


def test_validation_samples_get_only_the_deterministic_transforms() -> None:
    data = spec(*AUGMENT)
    splits = make_datasets(data, seed=0, loss="CrossEntropyLoss", data_dir=None)
    assert splits.val is not None and not splits.val.augments and splits.train.augments
    images, _ = digits(8)
    row = splits.val.indices[0] if splits.val.indices is not None else 0
    assert torch.equal(splits.val[0][0], (images[row] - 0.5) / 0.25)  # crop of 8 from 8


def test_normalize_needs_one_mean_per_channel() -> None:
    data = spec(
        {"type": "Resize", "size": 8}, {"type": "Normalize", "mean": [0.5] * 3, "std": [0.2] * 3}
    )
    for check in (
        lambda: check_data_available(data, None),
        lambda: make_datasets(data, seed=0, loss="NLLLoss", data_dir=None),
    ):
        with pytest.raises(SpecError, match="3 mean values but the images have 1 channel") as err:
            check()
        assert err.value.details[0]["loc"] == "data.transforms[1]"


def test_fake_rgb_images_take_three_channel_normalize() -> None:
    data = DataSpec.model_validate({
        "dataset": "fake", "input_shape": [3, 6, 6], "size": 10,
        "transforms": [{"type": "Normalize", "mean": [0.5] * 3, "std": [0.5] * 3}],
    })  # fmt: skip
    x, _ = train_of(data)[0]
    assert x.shape == (3, 6, 6) and float(x.min()) >= -1.0


def test_random_crop_larger_than_the_padded_image_is_refused() -> None:
    data = spec({"type": "RandomCrop", "size": 13, "padding": 2})
    with pytest.raises(SpecError) as err:
        check_data_available(data, None)
    assert err.value.details[0]["loc"] == "data.transforms[0]"


def test_augmentation_is_deterministic_under_the_loader_seed() -> None:
    ds = train_of(spec(*AUGMENT))
    first, again, other = epoch(ds, seed=3), epoch(ds, seed=3), epoch(ds, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    # Rebuilt from the spec, as a retried job would: the same augmented batches.
    rebuilt = epoch(train_of(spec(*AUGMENT)), seed=3)
    assert all(torch.equal(a, b) for a, b in zip(first, rebuilt, strict=True))


def crop_offsets(images: torch.Tensor, raw: torch.Tensor, padding: int) -> list[tuple[int, int]]:
    """Where in the zero-padded raw image each crop was taken."""
    padded = torch.nn.functional.pad(raw, (padding,) * 4)
    side = images.shape[-1]
    shifts = [(dy, dx) for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)]
    return [
        next(s for s in shifts if torch.equal(p[:, s[0] : s[0] + side, s[1] : s[1] + side], x))
        for x, p in zip(images, padded, strict=True)
    ]


def test_crops_differ_from_sample_to_sample_and_epoch_to_epoch() -> None:
    ds = train_of(spec(AUGMENT[0]))
    raw = digits(8)[0][(ds.indices or [])[:60]]
    loader = make_loader(ds, batch_size=60, shuffle=False, seed=0)
    epoch1, epoch2 = (next(iter(loader))[0] for _ in range(2))
    first, second = crop_offsets(epoch1, raw, 2), crop_offsets(epoch2, raw, 2)
    assert len(set(first)) > 10  # every sample draws its own crop
    assert sum(a != b for a, b in zip(first, second, strict=True)) > 30


def test_flip_probability_is_honoured_per_sample() -> None:
    ds = train_of(spec({"type": "RandomHorizontalFlip", "p": 0.5}), seed=1)
    loader = make_loader(ds, batch_size=len(ds), shuffle=False, seed=0)
    ((x, _),) = list(loader)
    plain = make_datasets(spec(), seed=1, loss="CrossEntropyLoss", data_dir=None).train
    raw = torch.stack([plain[i][0] for i in range(len(plain))])
    flipped = (x == raw.flip(-1)).flatten(1).all(dim=1) & ~(x == raw).flatten(1).all(dim=1)
    assert 0.35 < float(flipped.float().mean()) < 0.65


def test_workers_augment_exactly_like_the_main_process() -> None:
    ds = train_of(spec(*AUGMENT))
    single, workers = epoch(ds, seed=9), epoch(ds, seed=9, num_workers=2)
    assert all(torch.equal(a, b) for a, b in zip(single, workers, strict=True))


def test_augmentation_leaves_the_global_generator_alone() -> None:
    ds = train_of(spec(*AUGMENT))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    epoch(ds, seed=1)
    ds[5]  # a plain index is augmented too, seeded by the dataset seed and the index
    assert torch.equal(torch.rand(3), expected)


def test_a_plain_index_is_augmented_the_same_way_every_time() -> None:
    ds = train_of(spec(*AUGMENT))
    assert torch.equal(ds[7][0], ds[7][0])
    assert not all(torch.equal(ds[i][0], ds[7][0]) for i in range(8))
