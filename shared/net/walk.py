"""The dry run's forward pass, module by module, so a failure names the layer that failed.

Shapes are checked in plain words for the common layers before torch's own message;
each Residual's branches must give the same shape (no silent broadcasting).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shared.net.build import Sites, first_line
from shared.net.layers import LAYERS, Bilinear, Residual

Shapes = list[tuple[str, str, tuple[int, ...]]]  # (qualified name, type, output shape)
# Built-in layers that pass integer token ids through unchanged (or embed them).
_TAKES_IDS = (nn.Embedding, nn.Flatten, nn.Unflatten, nn.Identity)


@dataclass(slots=True)
class Walk:
    """What the walk needs to know, and the output shapes it has recorded."""

    sites: Sites
    vocab_size: int | None  # token ids reach [0, vocab_size) when the input is tokens
    shapes: Shapes = field(default_factory=list)


def run_children(seq: nn.Sequential, x: torch.Tensor, prefix: str, walk: Walk) -> torch.Tensor:
    """Push `x` through a Sequential's children, descending into Sequential and Residual."""
    for name, child in seq.named_children():
        qual = prefix + name
        if type(child) is nn.Sequential:
            x = run_children(child, x, qual + ".", walk)
        elif type(child) is Residual:
            x = _run_residual(child, x, qual, walk)
        else:
            x = _run_leaf(child, x, qual, walk)
    return x


def _run_residual(block: Residual, x: torch.Tensor, qual: str, walk: Walk) -> torch.Tensor:
    projection = block.shortcut if isinstance(block.shortcut, nn.Sequential) else None
    _refuse_in_place_start(block.body, f"{qual}.body.", walk.sites)
    if projection is not None:
        _refuse_in_place_start(projection, f"{qual}.shortcut.", walk.sites)
    body = run_children(block.body, x, f"{qual}.body.", walk)
    short = x if projection is None else run_children(projection, x, f"{qual}.shortcut.", walk)
    if body.shape != short.shape:  # checked here: torch would broadcast some mismatches
        hint = (
            "add a projection shortcut"
            if projection is None
            else ("make the shortcut's output match the body's")
        )
        raise walk.sites[qual].error(
            f"body gives {tuple(body.shape)} but shortcut gives {tuple(short.shape)}: {hint}"
        )
    out = body + short
    walk.shapes.append((qual, "Residual", tuple(out.shape)))
    return out


def _refuse_in_place_start(seq: nn.Sequential, prefix: str, sites: Sites) -> None:
    # Both branches read the block's input: an in-place first layer would change it
    # under the other branch (and under autograd).
    name, module = next(iter(seq.named_children()))
    if type(module) is nn.Sequential:
        _refuse_in_place_start(module, f"{prefix}{name}.", sites)
    elif type(module) is Residual:
        _refuse_in_place_start(module.body, f"{prefix}{name}.body.", sites)
    elif getattr(module, "inplace", False) is True:
        raise sites[prefix + name].error(
            "an in-place first layer of a Residual branch overwrites the block's input, "
            "which the other branch reads too: set 'inplace' to false",
            "inplace",
        )


def _run_leaf(module: nn.Module, x: torch.Tensor, qual: str, walk: Walk) -> torch.Tensor:
    site = walk.sites[qual]
    shape = tuple(x.shape)
    if (
        isinstance(module, nn.Embedding)
        and walk.vocab_size is not None
        and walk.vocab_size > module.num_embeddings
    ):
        raise site.error(
            f"has {module.num_embeddings} embeddings but data.vocab_size is {walk.vocab_size}: "
            f"token ids up to {walk.vocab_size - 1} would be out of range",
            "num_embeddings",
        )
    problem = _input_problem(module, x)
    if problem is None:
        try:
            out = module(x)
        except Exception as exc:  # torch's own shape errors, reworded below
            problem = f"{first_line(exc)} (input shape {shape})"
        else:
            if not isinstance(out, torch.Tensor):
                problem = f"returns {type(out).__name__}, not a tensor"
    if problem is not None:
        raise site.error(problem)
    tensor: torch.Tensor = out  # a tensor: checked above
    walk.shapes.append((qual, type(module).__name__, tuple(tensor.shape)))
    return tensor


def _input_problem(module: nn.Module, x: torch.Tensor) -> str | None:
    """A plain-words complaint for the common layers, before torch's own message."""
    shape = tuple(x.shape)
    got = f"(input shape {shape})"
    if isinstance(module, nn.Embedding):
        if x.is_floating_point():
            return f"expects integer token ids, got floats {got}: use data.input_kind 'tokens'"
        return None
    builtin = type(module) in LAYERS.values()
    if builtin and not x.is_floating_point() and not isinstance(module, _TAKES_IDS):
        return f"gets integer token ids {got}: start the model with an Embedding"
    for kind, check in _SHAPE_CHECKS:
        if isinstance(module, kind):
            problem = check(module, shape)
            return f"{problem} {got}" if problem else None
    return None


def _last_dimension(width: int, shape: tuple[int, ...]) -> str | None:
    return None if shape[-1] == width else f"expects last dimension {width}, got {shape[-1]}"


def _conv(module: nn.modules.conv._ConvNd, shape: tuple[int, ...]) -> str | None:
    rank = len(module.kernel_size) + 2
    if len(shape) != rank:
        return f"expects {rank}-D input (batch, channels, ...)"
    if shape[1] != module.in_channels:
        return f"expects {module.in_channels} input channels, got {shape[1]}"
    return None


def _batch_norm(module: nn.modules.batchnorm._BatchNorm, shape: tuple[int, ...]) -> str | None:
    ranks = (2, 3) if isinstance(module, nn.BatchNorm1d) else (4,)
    if len(shape) not in ranks:
        return f"expects {' or '.join(str(r) for r in ranks)}-D input"
    if shape[1] != module.num_features:
        return f"expects {module.num_features} features in dimension 1, got {shape[1]}"
    return None


def _group_norm(module: nn.GroupNorm, shape: tuple[int, ...]) -> str | None:
    if len(shape) < 2 or shape[1] != module.num_channels:
        return f"expects {module.num_channels} channels in dimension 1"
    return None


def _layer_norm(module: nn.LayerNorm, shape: tuple[int, ...]) -> str | None:
    want = tuple(module.normalized_shape)
    return None if shape[-len(want) :] == want else f"expects trailing dimensions {want}"


# The first class a module is an instance of picks its check (module, input shape) ->
# what is wrong without the "(input shape ...)" suffix, or None.
_SHAPE_CHECKS: tuple[tuple[type[nn.Module], Callable[[Any, tuple[int, ...]], str | None]], ...] = (
    (nn.Linear, lambda m, shape: _last_dimension(m.in_features, shape)),
    (Bilinear, lambda m, shape: _last_dimension(m.in1_features, shape)),
    (nn.modules.conv._ConvNd, _conv),
    (nn.BatchNorm1d, _batch_norm),
    (nn.BatchNorm2d, _batch_norm),
    (nn.GroupNorm, _group_norm),
    (nn.LayerNorm, _layer_norm),
)
