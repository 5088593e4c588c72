"""MNIST / FashionMNIST / CIFAR-10 from tiny files in tmp_path; the restricted unpickler."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from shared.errors import SpecError
from shared.spec import DataSpec
from worker.training.cifar import load_array_pickle
from worker.training.data import check_data_available, make_datasets

# --- fixture files -----------------------------------------------------------------


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """The idx3 / idx1 ubyte files torchvision's MNIST reads (magic 0x803 / 0x801)."""
    folder.mkdir(parents=True, exist_ok=True)
    n, rows, cols = images.shape
    header = struct.pack(">IIII", 0x0803, n, rows, cols)
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 0x0801, n) + labels.astype(np.uint8).tobytes()
    )


def mnist_files(root: Path, name: str = "MNIST", n_train: int = 20, n_test: int = 6) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        write_idx(root / name / "raw", prefix, images, np.arange(n) % 10)


def cifar_batch(n: int, first_label: int = 0) -> dict[bytes, Any]:
    data = np.random.default_rng(n).integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [(first_label + i) % 10 for i in range(n)]
    return {b"batch_label": b"fixture", b"data": data, b"labels": labels}


def cifar_files(root: Path, *, per_batch: int = 3, n_test: int = 4, protocol: int = 2) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        batch = cifar_batch(per_batch, first_label=i)
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=protocol))
    (folder / "test_batch").write_bytes(pickle.dumps(cifar_batch(n_test), protocol=protocol))
    return folder


def spec(**fields: Any) -> DataSpec:
    return DataSpec.model_validate(fields)


# --- MNIST and FashionMNIST ----------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
def test_mnist_like_files_load_with_the_official_test_set(
    tmp_path: Path, dataset: str, folder: str
) -> None:
    mnist_files(tmp_path, folder)
    data = spec(dataset=dataset, val_fraction=0.25, test_fraction=0.5)  # test_fraction unused
    splits = make_datasets(data, seed=0, loss="CrossEntropyLoss", data_dir=tmp_path)
    assert splits.val is not None and splits.test is not None
    assert (len(splits.train), len(splits.val), len(splits.test)) == (15, 5, 6)
    x, y = splits.test[3]
    raw = (tmp_path / folder / "raw" / "t10k-images-idx3-ubyte").read_bytes()[16:]
    expected = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(6, 1, 28, 28)[3]
    assert x.dtype == torch.float32 and torch.equal(x, expected.float() / 255)
    assert y.dtype == torch.int64 and int(y) == 3


def test_mnist_without_validation_has_no_val_split(tmp_path: Path) -> None:
    mnist_files(tmp_path)
    data = spec(dataset="mnist", val_fraction=0.0)
    splits = make_datasets(data, seed=0, loss="MSELoss", data_dir=tmp_path)
    assert splits.val is None and splits.test is not None and len(splits.train) == 20
    assert splits.train[0][1].shape == (10,)  # one-hot for MSELoss


def test_a_corrupt_idx_file_fails_with_a_message(tmp_path: Path) -> None:
    mnist_files(tmp_path)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00" * 20)
    with pytest.raises(SpecError, match="cannot read the mnist files"):
        make_datasets(spec(dataset="mnist"), seed=0, loss="NLLLoss", data_dir=tmp_path)


# --- CIFAR-10 ------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_batches_load_channel_major(tmp_path: Path, protocol: int) -> None:
    cifar_files(tmp_path, protocol=protocol)
    data = spec(dataset="cifar10", val_fraction=0.2)
    splits = make_datasets(data, seed=1, loss="CrossEntropyLoss", data_dir=tmp_path)
    assert splits.val is not None and splits.test is not None
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 3, 4)
    x, y = splits.test[2]
    row = cifar_batch(4)[b"data"][2]
    assert x.shape == (3, 32, 32)
    # Channel c, pixel (h, w) is value c * 1024 + h * 32 + w of the row.
    assert float(x[1, 2, 5]) == pytest.approx(row[1024 + 2 * 32 + 5] / 255)
    assert int(y) == 2


def test_python2_module_names_for_numpy_are_accepted() -> None:
    raw = pickle.dumps(cifar_batch(2), protocol=2)
    old = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert old != raw
    batch = load_array_pickle(old)
    assert np.array_equal(batch[b"data"], cifar_batch(2)[b"data"])


class RunsACommand:
    """What a hostile batch file would hold: unpickling it calls os.system."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def test_the_unpickler_refuses_other_globals_without_running_them(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    raw = pickle.dumps({b"data": RunsACommand(f"touch {marker}"), b"labels": []})
    with pytest.raises(pickle.UnpicklingError, match="refused global"):
        load_array_pickle(raw)
    assert not marker.exists()


def test_a_hostile_cifar_batch_fails_the_job_without_running(tmp_path: Path) -> None:
    folder = cifar_files(tmp_path)
    marker = tmp_path / "ran"
    (folder / "data_batch_3").write_bytes(pickle.dumps(RunsACommand(f"touch {marker}")))
    with pytest.raises(SpecError, match=r"data_batch_3.*refused global"):
        make_datasets(spec(dataset="cifar10"), seed=0, loss="NLLLoss", data_dir=tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("batch", "problem"),
    [
        ([1, 2], "expected a dict"),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, "100 values"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "outside"),
        ({b"labels": [0]}, "no 'data'"),
    ],
)
def test_malformed_cifar_batches_are_named(tmp_path: Path, batch: Any, problem: str) -> None:
    folder = cifar_files(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps(batch))
    with pytest.raises(SpecError, match=problem):
        make_datasets(spec(dataset="cifar10"), seed=0, loss="NLLLoss", data_dir=tmp_path)


# --- check_data_available --------------------------------------------------------------


def test_missing_files_say_where_they_are_expected(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as err:
        check_data_available(spec(dataset="mnist"), tmp_path)
    message = err.value.message
    expected = "data.dataset 'mnist': files not found under <TRAINYARD_DATA_DIR>/MNIST/raw"
    assert message.startswith(expected)
    assert str(tmp_path) not in message  # the server's own paths stay private
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert "use dataset 'digits'" in message
    assert err.value.details[0]["loc"] == "data.dataset"


def test_only_the_missing_files_are_listed(tmp_path: Path) -> None:
    folder = cifar_files(tmp_path)
    (folder / "data_batch_4").unlink()
    with pytest.raises(SpecError) as err:
        check_data_available(spec(dataset="cifar10"), tmp_path)
    assert "<TRAINYARD_DATA_DIR>/cifar-10-batches-py (expected data_batch_4)" in err.value.message
    assert str(folder) not in err.value.message


def test_no_data_dir_names_the_setting() -> None:
    with pytest.raises(SpecError, match=r"TRAINYARD_DATA_DIR.*FashionMNIST/raw") as err:
        check_data_available(spec(dataset="fashion_mnist"), None)
    assert err.value.details[0]["loc"] == "data.dataset"


def test_datasets_without_files_need_no_data_dir() -> None:
    for dataset in ("digits", "synthetic"):
        check_data_available(spec(dataset=dataset), None)
    check_data_available(spec(dataset="fake", input_shape=[3, 8, 8]), None)


def test_present_files_pass(tmp_path: Path) -> None:
    mnist_files(tmp_path)
    cifar_files(tmp_path)
    check_data_available(spec(dataset="mnist"), tmp_path)
    check_data_available(spec(dataset="cifar10"), tmp_path)
