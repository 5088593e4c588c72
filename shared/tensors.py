"""state_dict <-> safetensors bytes. Weights never travel as pickle."""

from __future__ import annotations

import hashlib

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save


def state_dict_to_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """Serialise a state_dict as safetensors (tensors moved to CPU, made contiguous).

    Tied or shared tensors are cloned so safetensors accepts them; keys are kept as-is.
    """
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    return bytes(st_save(flat))


def bytes_to_state_dict(data: bytes) -> dict[str, torch.Tensor]:
    """Parse safetensors bytes into a CPU state_dict (no code is executed)."""
    return dict(st_load(data))


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of a blob, stored next to checkpoints so downloads can be verified."""
    return hashlib.sha256(data).hexdigest()
