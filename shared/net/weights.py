"""Checking a checkpoint against a model by keys and shapes, without loading tensors.

The API uses it at submit time (a safetensors header is plain JSON), the worker again
when it loads the weights: both say the same thing about the same mismatch.
"""

from __future__ import annotations

import json
import struct
from fnmatch import fnmatchcase

Shapes = dict[str, tuple[int, ...]]


def safetensors_shapes(blob: bytes) -> Shapes:
    """Tensor name -> shape from a safetensors blob's header (no tensor data is read)."""
    if len(blob) < 8:
        raise ValueError("not a safetensors blob")
    (size,) = struct.unpack("<Q", blob[:8])
    if size > len(blob) - 8:
        raise ValueError("not a safetensors blob")
    header = json.loads(blob[8 : 8 + size])
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def skipped(key: str, skip: list[str]) -> bool:
    """Whether a state_dict key matches one of the `skip` globs."""
    return any(fnmatchcase(key, pattern) for pattern in skip)


def state_problems(
    model: Shapes, checkpoint: Shapes, *, strict: bool, skip: list[str]
) -> list[str]:
    """Why `checkpoint` cannot initialise `model` (empty when it can).

    Keys matching `skip` are left as built. Shapes of shared keys must agree; with
    `strict`, every other model key must be in the checkpoint and no extra key may be.
    """
    wanted = {k: v for k, v in checkpoint.items() if not skipped(k, skip)}
    problems = [
        f"'{k}' is {shape} in the checkpoint but {model[k]} in the model"
        for k, shape in wanted.items()
        if k in model and shape != model[k]
    ]
    if strict:
        kept = [k for k in model if not skipped(k, skip)]
        problems += [f"'{k}' is missing from the checkpoint" for k in kept if k not in wanted]
        problems += [f"'{k}' is not in the model (skip it?)" for k in wanted if k not in model]
    elif not any(k in model for k in wanted):
        problems.append("no key of the checkpoint is in the model")
    return problems


def problems_message(problems: list[str]) -> str:
    """The first few problems on one line."""
    more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more
