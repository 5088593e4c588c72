"""CIFAR-10 "python version" batches, read with an unpickler that can only rebuild arrays.

The batches are pickles, and a pickle can run any callable it names. These files come
from the operator's disk, so instead of `pickle.load` (or torchvision's CIFAR10, which
calls it) we resolve only the few numpy globals an array needs and refuse the rest.
"""

from __future__ import annotations

import codecs
import importlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.dataset_files import CIFAR_TEST_FILE, CIFAR_TRAIN_FILES

IMAGE_SHAPE = (3, 32, 32)
NUM_CLASSES = 10


def _numpy_attr(submodule: str, attr: str) -> Any:
    # numpy 2 moved numpy.core to numpy._core; batches pickled by either name the old
    # or the new module, so both names resolve to whichever this numpy has.
    for module in (f"numpy._core.{submodule}", f"numpy.core.{submodule}"):
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {submodule}.{attr}")


_reconstruct = _numpy_attr("multiarray", "_reconstruct")
_frombuffer = _numpy_attr("numeric", "_frombuffer")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol 2 rebuilds bytes as _codecs.encode(text, "latin1"); no other codec may run.
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"codec {encoding!r} is not allowed in a CIFAR-10 batch")
    return codecs.encode(text, "latin1")


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # pickle protocol 5
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,  # how protocol 2 spells bytes under Python 3
}


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays; any other global raises."""

    def find_class(self, module: str, name: str) -> Any:
        """Look the global up in ALLOWED_GLOBALS instead of importing it."""
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def load_array_pickle(raw: bytes) -> Any:
    """Unpickle `raw` with ArrayUnpickler (bytes keys and strings stay bytes, as in CIFAR)."""
    return ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()


def read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch file: uint8 images (N, 3, 32, 32) and int64 labels (N,)."""
    batch = load_array_pickle(path.read_bytes())
    if not isinstance(batch, dict):
        raise ValueError(f"expected a dict, found {type(batch).__name__}")
    data, labels = _field(batch, "data"), _field(batch, "labels")
    width = int(np.prod(IMAGE_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise ValueError("'data' is not a 2-d uint8 array")
    if data.shape[1] != width:
        raise ValueError(f"'data' rows have {data.shape[1]} values, not {width}")
    label_array = np.asarray(labels)
    if label_array.shape != (data.shape[0],) or label_array.dtype.kind not in "iu":
        raise ValueError(f"'labels' is not {data.shape[0]} integers")
    if label_array.size and (label_array.min() < 0 or label_array.max() >= NUM_CLASSES):
        raise ValueError(f"'labels' outside 0..{NUM_CLASSES - 1}")
    # Rows are the 1024 red, then green, then blue values of a row-major 32x32 image.
    images = torch.from_numpy(data.copy()).view(-1, *IMAGE_SHAPE)
    return images, torch.as_tensor(label_array, dtype=torch.int64)


def load_cifar10(folder: Path, *, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The five training batches concatenated, or the test batch."""
    parts = []
    for name in CIFAR_TRAIN_FILES if train else (CIFAR_TEST_FILE,):
        try:
            parts.append(read_batch(folder / name))
        except Exception as exc:  # a bad pickle can raise almost anything: name the file
            raise ValueError(f"{name}: {exc}") from exc
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _field(batch: dict[Any, Any], key: str) -> Any:
    # The official batches, pickled by Python 2, have bytes keys; re-pickled ones may not.
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise ValueError(f"no '{key}' entry")
