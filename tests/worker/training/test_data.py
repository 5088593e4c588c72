"""make_datasets / make_loader: splits, determinism, targets per loss, synthetic and fake data."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pydantic import ValidationError

from shared.errors import SpecError
from shared.spec import DataSpec
from worker.training.data import SplitDataset, make_datasets, make_loader


def spec(**fields: Any) -> DataSpec:
    return DataSpec.model_validate(fields)


def tensors(ds: SplitDataset | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample of a split, stacked."""
    assert ds is not None
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return torch.stack(xs), torch.stack(ys)


def rows(ds: SplitDataset | None) -> list[int]:
    assert ds is not None and ds.indices is not None
    return ds.indices


def test_digits_splits_are_disjoint_and_cover_the_data() -> None:
    splits = make_datasets(
        spec(dataset="digits", val_fraction=0.2, test_fraction=0.1),
        seed=0, loss="CrossEntropyLoss", data_dir=None,
    )  # fmt: skip
    train, val, test = rows(splits.train), rows(splits.val), rows(splits.test)
    assert (len(train), len(val), len(test)) == (1797 - 359 - 180, 359, 180)
    assert sorted(train + val + test) == list(range(1797))


def test_without_a_test_split_validation_is_the_head_of_the_seeded_permutation() -> None:
    splits = make_datasets(spec(dataset="digits"), seed=4, loss="NLLLoss", data_dir=None)
    order = torch.randperm(1797, generator=torch.Generator().manual_seed(4)).tolist()
    assert rows(splits.val) == order[:359]
    assert rows(splits.train) == order[359:]
    assert splits.test is None


def test_no_held_out_data_keeps_every_sample_in_order() -> None:
    data = spec(dataset="synthetic", size=30, val_fraction=0.0)
    splits = make_datasets(data, seed=1, loss="CrossEntropyLoss", data_dir=None)
    assert splits.val is None and splits.test is None
    assert rows(splits.train) == list(range(30))


@pytest.mark.parametrize("dataset", ["digits", "synthetic", "fake"])
def test_same_seed_gives_identical_tensors_and_another_seed_another_split(dataset: str) -> None:
    extra = {"input_shape": [1, 4, 4], "size": 40} if dataset == "fake" else {"size": 40}
    data = spec(dataset=dataset, val_fraction=0.25, test_fraction=0.25, **extra)
    a, b, c = (
        make_datasets(data, seed=s, loss="CrossEntropyLoss", data_dir=None) for s in (7, 7, 8)
    )
    for name in ("train", "val", "test"):
        xa, ya = tensors(getattr(a, name))
        xb, yb = tensors(getattr(b, name))
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert rows(a.val) != rows(c.val)


def test_too_few_samples_are_refused_by_the_spec() -> None:
    with pytest.raises(ValidationError, match="too few for training, validation and test"):
        spec(dataset="synthetic", size=2, val_fraction=0.1, test_fraction=0.1)
    with pytest.raises(ValidationError, match="fewer than 2 for training"):
        spec(dataset="synthetic", size=3, val_fraction=0.5)


@pytest.mark.parametrize("loss", ["CrossEntropyLoss", "NLLLoss"])
def test_class_index_losses_get_int64_labels(loss: str) -> None:
    x, y = make_datasets(spec(dataset="digits"), seed=0, loss=loss, data_dir=None).train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.shape == ()


@pytest.mark.parametrize("loss", ["MSELoss", "L1Loss", "SmoothL1Loss", "BCEWithLogitsLoss"])
def test_other_losses_on_classes_get_one_hot_rows(loss: str) -> None:
    data = spec(dataset="synthetic", size=20, num_classes=4)
    splits = make_datasets(data, seed=0, loss=loss, data_dir=None)
    _, labels = tensors(make_datasets(data, seed=0, loss="CrossEntropyLoss", data_dir=None).val)
    _, one_hot = tensors(splits.val)
    assert one_hot.dtype == torch.float32 and one_hot.shape == (len(labels), 4)
    assert torch.equal(one_hot.argmax(dim=1), labels) and torch.all(one_hot.sum(dim=1) == 1)


def test_regression_targets_are_float_rows() -> None:
    data = spec(dataset="synthetic", task="regression", size=20, output_dim=3)
    x, y = make_datasets(data, seed=0, loss="L1Loss", data_dir=None).train[0]
    assert x.shape == (10,) and y.shape == (3,) and y.dtype == torch.float32


def test_synthetic_float_data_keeps_its_teacher_rule() -> None:
    # The fixed teacher: same labels for the same inputs whatever the job seed.
    data = spec(dataset="synthetic", size=200, val_fraction=0.0)
    x1, y1 = tensors(make_datasets(data, seed=1, loss="CrossEntropyLoss", data_dir=None).train)
    x2, y2 = tensors(make_datasets(data, seed=2, loss="CrossEntropyLoss", data_dir=None).train)
    assert not torch.equal(x1, x2)
    weight = torch.linalg.lstsq(x1, torch.nn.functional.one_hot(y1, 10).float()).solution
    assert ((x2 @ weight).argmax(dim=1) == y2).float().mean() > 0.5  # one linear rule


def test_synthetic_tokens_are_int64_ids_in_range() -> None:
    data = spec(
        dataset="synthetic", input_kind="tokens", input_shape=[3, 5], vocab_size=7,
        size=300, num_classes=3, val_fraction=0.0,
    )  # fmt: skip
    x, y = tensors(make_datasets(data, seed=0, loss="CrossEntropyLoss", data_dir=None).train)
    assert x.dtype == torch.int64 and x.shape == (300, 3, 5)
    assert int(x.min()) >= 0 and int(x.max()) < 7
    assert y.dtype == torch.int64 and set(y.tolist()) == {0, 1, 2}


def test_synthetic_token_labels_depend_on_the_bag_of_tokens_only() -> None:
    data = spec(
        dataset="synthetic", input_kind="tokens", input_shape=[2], vocab_size=3,
        size=200, num_classes=3, val_fraction=0.0,
    )  # fmt: skip
    labels: dict[tuple[int, ...], set[int]] = {}
    orders: dict[tuple[int, ...], set[tuple[int, ...]]] = {}
    for seed in (0, 1):  # and not on the job seed
        x, y = tensors(make_datasets(data, seed=seed, loss="NLLLoss", data_dir=None).train)
        for tokens, label in zip(x.tolist(), y.tolist(), strict=True):
            bag = tuple(sorted(tokens))
            labels.setdefault(bag, set()).add(label)
            orders.setdefault(bag, set()).add(tuple(tokens))
    assert all(len(seen) == 1 for seen in labels.values())
    assert any(len(seen) == 2 for seen in orders.values())  # both orders were drawn
    assert len({next(iter(seen)) for seen in labels.values()}) > 1


def test_synthetic_token_regression_targets() -> None:
    data = spec(
        dataset="synthetic", task="regression", input_kind="tokens", input_shape=[6],
        vocab_size=1000, output_dim=2, size=50,
    )  # fmt: skip
    x, y = make_datasets(data, seed=0, loss="MSELoss", data_dir=None).train[0]
    assert x.dtype == torch.int64 and y.shape == (2,) and y.dtype == torch.float32


def test_fake_images_are_floats_in_unit_range() -> None:
    data = spec(dataset="fake", input_shape=[3, 5, 6], size=20, num_classes=4, val_fraction=0.0)
    x, y = tensors(make_datasets(data, seed=0, loss="CrossEntropyLoss", data_dir=None).train)
    assert x.shape == (20, 3, 5, 6) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and x.std() > 0.1
    assert y.dtype == torch.int64 and int(y.min()) >= 0 and int(y.max()) < 4
    x_other, _ = tensors(make_datasets(data, seed=1, loss="CrossEntropyLoss", data_dir=None).train)
    assert not torch.equal(x, x_other)


def test_fake_data_leaves_the_global_generator_alone() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    make_datasets(spec(dataset="fake", input_shape=[1, 4, 4], size=10), seed=3,
                  loss="CrossEntropyLoss", data_dir=None)  # fmt: skip
    assert torch.equal(torch.rand(3), expected)


def test_fake_images_with_more_than_four_channels_are_refused() -> None:
    with pytest.raises(SpecError) as err:
        make_datasets(spec(dataset="fake", input_shape=[5, 4, 4], size=10), seed=0,
                      loss="CrossEntropyLoss", data_dir=None)  # fmt: skip
    assert err.value.details[0]["loc"] == "data.input_shape"


def batches(loader: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_training_loader_drops_a_last_batch_of_one() -> None:
    data = spec(dataset="synthetic", size=21, val_fraction=0.0)
    train = make_datasets(data, seed=0, loss="CrossEntropyLoss", data_dir=None).train
    assert len(make_loader(train, batch_size=4, shuffle=True, seed=0, train=True)) == 5
    assert len(make_loader(train, batch_size=4, shuffle=False, seed=0)) == 6


def test_loader_order_depends_only_on_its_seed() -> None:
    train = make_datasets(spec(dataset="digits"), seed=0, loss="NLLLoss", data_dir=None).train
    a = batches(make_loader(train, batch_size=100, shuffle=True, seed=1))
    torch.manual_seed(123)  # the global generator plays no part
    b = batches(make_loader(train, batch_size=100, shuffle=True, seed=1))
    c = batches(make_loader(train, batch_size=100, shuffle=True, seed=2))
    assert all(torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True))
    assert not torch.equal(a[0][1], c[0][1])


def test_loaders_with_workers_give_the_same_batches() -> None:
    data = spec(dataset="synthetic", size=64, val_fraction=0.25)
    splits = make_datasets(data, seed=0, loss="CrossEntropyLoss", data_dir=None)
    single = make_loader(splits.train, batch_size=8, shuffle=True, seed=5, num_workers=0)
    workers = make_loader(splits.train, batch_size=8, shuffle=True, seed=5, num_workers=2)
    for _ in range(2):  # two epochs: the second reuses the persistent workers
        for (x0, y0), (x2, y2) in zip(batches(single), batches(workers), strict=True):
            assert torch.equal(x0, x2) and torch.equal(y0, y2)


def test_pin_memory_without_cuda_is_ignored() -> None:
    train = make_datasets(spec(dataset="digits"), seed=0, loss="NLLLoss", data_dir=None).train
    loader = make_loader(train, batch_size=8, shuffle=False, seed=0, pin_memory=True)
    assert loader.pin_memory == torch.cuda.is_available()
