"""Cheap checks that a worker can produce a DataSpec's samples: files present, transforms fit.

Run at submit time (the API) and again by `make_datasets` on the worker. They only look
at the spec and at file existence, never load data, and import neither torchvision nor
numpy, so the API can call them without the data stack.

Operator-provided datasets live under TRAINYARD_DATA_DIR (`data_dir`); nothing is ever
downloaded, and dataset names are looked up in `DATASET_FILES`, never used as paths:

    <data_dir>/MNIST/raw/train-images-idx3-ubyte        (torchvision's MNIST with
    <data_dir>/MNIST/raw/train-labels-idx1-ubyte         root=data_dir; the .gz files
    <data_dir>/MNIST/raw/t10k-images-idx3-ubyte          unpacked)
    <data_dir>/MNIST/raw/t10k-labels-idx1-ubyte
    <data_dir>/FashionMNIST/raw/...                     (the same four names)
    <data_dir>/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch
                                                        (the "CIFAR-10 python version"
                                                        tarball, extracted)
"""

from __future__ import annotations

from pathlib import Path

from shared.errors import SpecError
from shared.spec import DataSpec
from shared.spec.data import raw_sample_shape

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch"

# dataset -> (folder under data_dir, files that must be in it)
DATASET_FILES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mnist": (("MNIST", "raw"), _IDX_FILES),
    "fashion_mnist": (("FashionMNIST", "raw"), _IDX_FILES),
    "cifar10": (("cifar-10-batches-py",), (*CIFAR_TRAIN_FILES, CIFAR_TEST_FILE)),
}

# FakeData goes through PIL, whose image modes (L, LA, RGB, RGBA) hold 1 to 4 channels.
MAX_FAKE_CHANNELS = 4


def dataset_folder(dataset: str, data_dir: Path) -> Path:
    """Where a file-backed dataset's files are expected under `data_dir`."""
    parts, _ = DATASET_FILES[dataset]
    return data_dir.joinpath(*parts)


def check_data_available(data: DataSpec, data_dir: Path | None) -> None:
    """Raise SpecError unless this machine can produce the spec's samples.

    File-backed datasets need their files under `data_dir` (existence only); every
    dataset needs transforms that fit its images (see `check_transforms`).
    """
    check_transforms(data)
    if data.dataset == "fake" and data.input_shape[0] > MAX_FAKE_CHANNELS:
        raise SpecError.at(
            "data.input_shape",
            f"fake images have 1 to {MAX_FAKE_CHANNELS} channels, not {data.input_shape[0]}",
        )
    if data.dataset not in DATASET_FILES:
        return
    name = data.dataset
    subject = f"data.dataset '{name}'"
    if data_dir is None:
        parts, _ = DATASET_FILES[name]
        raise SpecError.at(
            "data.dataset",
            "is read from files on the server, but no data directory is configured "
            f"(TRAINYARD_DATA_DIR; the files go under <data_dir>/{'/'.join(parts)}); "
            "ask the operator or use dataset 'digits'",
            label=subject,
        )
    folder = dataset_folder(name, data_dir)
    missing = [f for f in DATASET_FILES[name][1] if not (folder / f).is_file()]
    if missing:
        raise SpecError.at(
            "data.dataset",
            # The path relative to the data root: users need not learn the server's layout.
            f"files not found under <TRAINYARD_DATA_DIR>/{'/'.join(DATASET_FILES[name][0])} "
            f"(expected {', '.join(missing)}); "
            "put them there or use dataset 'digits'",
            label=subject,
        )


def check_transforms(data: DataSpec) -> None:
    """Raise SpecError naming `data.transforms[i]` when a transform cannot act on the images."""
    channels, height, width = _image_shape(data)
    for i, t in enumerate(data.transforms):
        loc = f"data.transforms[{i}]"
        if t.type == "Normalize" and t.mean is not None and len(t.mean) != channels:
            problem = (
                f"Normalize has {len(t.mean)} mean values but the images have {channels} "
                f"channel{'s' if channels != 1 else ''}"
            )
            raise SpecError.at(loc, problem)
        if t.size is None:
            continue
        if t.type == "RandomCrop" and t.size > min(height, width) + 2 * t.padding:
            problem = (
                f"RandomCrop size {t.size} is larger than the {height}x{width} images "
                f"plus padding {t.padding}"
            )
            raise SpecError.at(loc, problem)
        if t.type in ("Resize", "CenterCrop", "RandomCrop"):
            height = width = t.size


def _image_shape(data: DataSpec) -> tuple[int, int, int]:
    shape = raw_sample_shape(data)
    if len(shape) != 3:  # only synthetic data is not an image, and it has no transforms
        return (shape[0], 1, 1)
    return shape[0], shape[1], shape[2]
