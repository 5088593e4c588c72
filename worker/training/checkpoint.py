"""Checkpoints as bytes: model weights as safetensors, optimizer state via torch.save.

The optimizer state holds only tensors, numbers and lists, so it can be read back with
`torch.load(weights_only=True)`, which refuses anything that would run code.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch
from torch import nn

from shared.errors import SpecError
from shared.net.weights import problems_message, skipped, state_problems
from shared.tensors import bytes_to_state_dict, sha256_hex, state_dict_to_bytes


@dataclass(frozen=True, slots=True)
class CheckpointBlob:
    """One checkpoint; `sha256` and `size` describe `model_state`, the downloadable part."""

    step: int
    epoch: int
    tag: str  # "epoch" | "step" | "best" | "final"
    model_state: bytes
    optimizer_state: bytes
    sha256: str
    size: int
    resume_state: bytes | None = None  # set on resumable ("epoch", "step") checkpoints


def capture(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    step: int,
    epoch: int,
    tag: str,
    resume_state: bytes | None = None,
) -> CheckpointBlob:
    """Snapshot model and optimizer state (copied to the host) into a CheckpointBlob."""
    model_state = state_dict_to_bytes(model.state_dict())
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    return CheckpointBlob(
        step=step,
        epoch=epoch,
        tag=tag,
        model_state=model_state,
        optimizer_state=buffer.getvalue(),
        sha256=sha256_hex(model_state),
        size=len(model_state),
        resume_state=resume_state,
    )


def restore_model(model: nn.Module, model_state: bytes, strict: bool = True) -> None:
    """Load safetensors bytes into `model` in place, on whatever device it lives."""
    model.load_state_dict(bytes_to_state_dict(model_state), strict=strict)


def load_initial_weights(
    model: nn.Module, model_state: bytes, *, strict: bool, skip: list[str]
) -> list[str]:
    """Fine-tuning start: copy a checkpoint's tensors into `model`; returns the keys loaded.

    Keys matching a `skip` glob stay as built (a new head); see shared.net.weights for the
    rules, which the API already applied at submit time.
    """
    state = bytes_to_state_dict(model_state)
    own = model.state_dict()
    problems = state_problems(
        {k: tuple(v.shape) for k, v in own.items()},
        {k: tuple(v.shape) for k, v in state.items()},
        strict=strict,
        skip=skip,
    )
    if problems:
        raise SpecError(
            "model.init_from: " + problems_message(problems),
            details=[{"loc": "model.init_from", "msg": p} for p in problems[:20]],
        )
    loadable = {k: v for k, v in state.items() if k in own and not skipped(k, skip)}
    model.load_state_dict(loadable, strict=False)
    return sorted(loadable)
