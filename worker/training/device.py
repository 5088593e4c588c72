"""Where a job trains and in which precision: "auto" devices and CUDA autocast."""

from __future__ import annotations

import contextlib

import torch

from shared.errors import SpecError
from shared.spec import TrainSpec


def resolve_device(requested: str | torch.device) -> torch.device:
    """Map "auto" to cuda when available, else cpu; cuda without a CUDA device is a SpecError."""
    name = str(requested)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpecError(
            "train.device is 'cuda' but this worker has no CUDA device",
            details=[{"loc": "train.device", "msg": "no CUDA device on this worker"}],
        )
    return device


def autocast(train: TrainSpec, device: torch.device) -> contextlib.AbstractContextManager[None]:
    """The spec's precision as a context for forward passes; SpecError for half precision
    on a CPU worker (the API refuses it unless the spec asks for device "cuda")."""
    if train.precision == "fp32":
        return contextlib.nullcontext()
    if device.type != "cuda":
        raise SpecError(
            f"train.precision {train.precision!r} needs a CUDA device; this worker has none",
            details=[{"loc": "train.precision", "msg": "autocast runs on CUDA"}],
        )
    dtype = torch.bfloat16 if train.precision == "bf16" else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)
