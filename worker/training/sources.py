"""Every sample of a named dataset as two tensors: inputs (N, ...) and labels or targets.

Images stay as stored (uint8 for files and FakeData, float32 for digits) and become float
in [0, 1] one sample at a time, so MNIST and CIFAR-10 take a quarter of the memory.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torchvision.datasets import FakeData
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.transforms.v2.functional import pil_to_tensor

from shared.dataset_files import dataset_folder
from shared.errors import SpecError
from shared.spec import DataSpec
from worker.training.cifar import load_cifar10

# The synthetic teacher is fixed, so the job seed changes which samples are drawn, not
# which function is learned.
_TEACHER_SEED = 20_240_601
_TOKEN_TABLE_SEED = _TEACHER_SEED + 1
# Tokens map to fixed 8-value codes that are summed over positions: a bag of words that
# Embedding + pooling (or Flatten) + Linear can learn, and a table of vocab_size x 8
# values whatever num_classes is.
_TOKEN_FEATURES = 8
_REGRESSION_NOISE = 0.1


def generated(data: DataSpec, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """digits, synthetic or fake: every sample, labels int64 (N,) or regression (N, D)."""
    if data.dataset == "digits":
        return digits(data.image_size)
    if data.dataset == "fake":
        return fake(data, seed)
    return synthetic(data, seed)


def stored(dataset: str, data_dir: Path, *, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """mnist, fashion_mnist or cifar10 from `data_dir`: uint8 (N, C, H, W), int64 (N,)."""
    folder = dataset_folder(dataset, data_dir)
    # Whatever is wrong with an operator's file (truncated, foreign, a refused pickle),
    # the job fails with a message that names it rather than with a traceback.
    try:
        if dataset == "cifar10":
            return load_cifar10(folder, train=train)
        # The raw idx files, parsed directly: torchvision's MNIST class would prefer a
        # processed/*.pt file when one exists, and we read no pickled formats.
        prefix = "train" if train else "t10k"
        images = read_image_file(str(folder / f"{prefix}-images-idx3-ubyte"))
        labels = read_label_file(str(folder / f"{prefix}-labels-idx1-ubyte"))
        return images.unsqueeze(1).contiguous(), labels.to(torch.int64)
    except Exception as exc:
        reason = str(exc) or "not in the expected format"
        problem = f"cannot read the {dataset} files ({type(exc).__name__}: {reason})"
        raise SpecError(
            f"data.dataset '{dataset}': {problem}",
            details=[{"loc": "data.dataset", "msg": problem}],
        ) from exc


def digits(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 8x8 digits as float32 (N, 1, S, S) in [0, 1], bilinear-resized."""
    bunch = load_digits()  # bundled with scikit-learn: no download
    images = torch.as_tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    if image_size != images.shape[-1]:
        size = (image_size, image_size)
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    return images.contiguous(), torch.as_tensor(bunch.target, dtype=torch.int64)


def fake(data: DataSpec, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision FakeData as uint8 (N, C, H, W); other seeds draw other images."""
    c, h, w = data.input_shape
    # FakeData seeds image i with i + random_offset: an offset of seed * size gives every
    # seed its own run of images instead of the neighbour's shifted by one.
    source = FakeData(
        size=data.size, image_size=(c, h, w), num_classes=data.num_classes,
        random_offset=seed * data.size,
    )  # fmt: skip
    images = torch.empty((data.size, c, h, w), dtype=torch.uint8)
    labels = torch.empty(data.size, dtype=torch.int64)
    # FakeData reseeds the global generators per image (CUDA too) and restores only the
    # CPU one; draw everything now, once, with both saved and restored.
    with torch.random.fork_rng(devices=_initialized_cuda_devices()):
        for i in range(data.size):
            image, label = source[i]
            images[i] = pil_to_tensor(image).view(c, h, w)
            labels[i] = label
    return images, labels


def synthetic(data: DataSpec, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs drawn under `seed`; labels or targets from the fixed teacher."""
    generator = torch.Generator().manual_seed(seed)
    width = data.num_classes if data.task == "classification" else data.output_dim
    if data.input_kind == "tokens":
        inputs = torch.randint(
            0, data.vocab_size, (data.size, *data.input_shape), generator=generator
        )
        features = _token_features(inputs, data.vocab_size)
    else:
        inputs = torch.randn((data.size, *data.input_shape), generator=generator)
        features = inputs.flatten(1)
    scores = features @ _teacher(features.shape[1], width)
    if data.task == "classification":
        return inputs, scores.argmax(dim=1)
    return inputs, scores + _REGRESSION_NOISE * torch.randn(scores.shape, generator=generator)


def _teacher(in_features: int, out_features: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(_TEACHER_SEED)
    # Scaled so teacher outputs have unit variance whatever the input width.
    weight = torch.randn(in_features, out_features, generator=generator)
    return weight / math.sqrt(in_features)


def _token_features(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(_TOKEN_TABLE_SEED)
    table = torch.randn(vocab_size, _TOKEN_FEATURES, generator=generator)
    # Centred, so a bag of uniform tokens has mean zero and no class wins by default.
    table -= table.mean(dim=0)
    bags = tokens.flatten(1)
    # embedding_bag sums without materializing (N, positions, features).
    summed = F.embedding_bag(bags, table, mode="sum")
    return summed / math.sqrt(bags.shape[1])  # unit variance, as the float inputs


def _initialized_cuda_devices() -> list[int]:
    # Saving CUDA RNG state would initialize CUDA in a process that never used it.
    return list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []  # type: ignore[no-untyped-call]
