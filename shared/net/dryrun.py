"""Dry-run a spec's model on the meta device: sizes, shapes and the output, no memory.

A spec names modules by string; only the classes in `shared.net.layers` (built-ins and the
operator's entry points) can be built, so a spec can never reach an arbitrary import
path. Every error is a `SpecError` whose message names the layer
(`model.layers[2] 'fc1' (Linear)`) and whose `details` carry the field path, so the API
can answer 400 before a worker ever sees the job.

Inputs of the dry run: float32 samples of `sample_shape(spec.data)`, or, when
`data.input_kind` is "tokens", int64 token ids of that shape (values do not exist on the
meta device, so only dtype and shape matter) for models that start with an Embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from shared.errors import SpecError
from shared.net.build import Sites, build_tree
from shared.net.init_freeze import apply_freeze, apply_init
from shared.net.layers import Residual
from shared.net.walk import Shapes, Walk, run_children
from shared.spec import JobSpec, output_width, sample_shape

DEFAULT_MAX_PARAMS = 50_000_000
# Trace rows store a module's dotted path in a 255-character column; parameter names
# add ".weight" / ".bias" to it.
MAX_QUALIFIED_NAME = 240
DRY_BATCH = 2  # BatchNorm refuses a batch of one in training mode


@dataclass(frozen=True, slots=True)
class DryRun:
    """What a dry run learned: sizes, and each leaf layer's (and each Residual's) output
    shape for a batch of 2, in forward order."""

    param_count: int
    trainable_count: int
    frozen_count: int
    output_shape: tuple[int, ...]
    layer_shapes: Shapes


def estimate_train_bytes(report: DryRun, *, batch_size: int) -> int:
    """A rough float32 training footprint: weights + grads + two optimizer moments, plus
    each layer's output and its gradient for one batch (what autograd keeps alive)."""
    activations = sum(math.prod(shape[1:]) for _, _, shape in report.layer_shapes)
    return 4 * (4 * report.param_count + 2 * activations * batch_size)


def dry_run(spec: JobSpec, max_params: int = DEFAULT_MAX_PARAMS) -> DryRun:
    """Build on the meta device and push a batch of 2 through it: checks sizes and shapes."""
    return checked_model(spec, max_params)[1]


def checked_model(
    spec: JobSpec, max_params: int = DEFAULT_MAX_PARAMS
) -> tuple[nn.Sequential, DryRun]:
    """The dry run, also returning the meta-device model it checked (for summaries)."""
    with torch.device("meta"):
        model, sites = build_tree(spec.model)
    too_long = next((n for n, _ in model.named_modules() if len(n) > MAX_QUALIFIED_NAME), None)
    if too_long is not None:
        msg = f"layer path '{too_long[:60]}...' is longer than {MAX_QUALIFIED_NAME} characters"
        raise SpecError.at("model", msg, label="")
    params = list(model.parameters())
    param_count = sum(p.numel() for p in params)
    if param_count > max_params:
        raise _too_big(model, sites, param_count, max_params)
    apply_init(model, spec.model.init)  # checks only: meta tensors hold no values
    apply_freeze(model, spec.model.freeze)

    walk = Walk(sites, spec.data.vocab_size if spec.data.input_kind == "tokens" else None)
    with torch.device("meta"):
        out = run_children(model, dry_input(spec), "", walk)
    width = output_width(spec)
    if tuple(out.shape) != (DRY_BATCH, width):
        msg = (
            f"the model outputs shape {tuple(out.shape)} for a batch of {DRY_BATCH}, but "
            f"{spec.train.loss} {_target_words(spec)} needs (batch, {width}): "
            f"make the last layer output {width} values"
        )
        raise SpecError.at("model", msg, label="")
    trainable = sum(p.numel() for p in params if p.requires_grad)
    if trainable == 0:  # freeze-all is refused by apply_freeze; this is a parameter-free model
        msg = "the model has no parameters to train: add a layer with weights (e.g. Linear)"
        raise SpecError.at("model", msg, label="")
    return model, DryRun(
        param_count=param_count,
        trainable_count=trainable,
        frozen_count=param_count - trainable,
        output_shape=tuple(out.shape),
        layer_shapes=walk.shapes,
    )


def dry_input(spec: JobSpec) -> torch.Tensor:
    """A meta-device batch of 2 samples: float32, or int64 token ids for `input_kind` tokens."""
    dtype = torch.int64 if spec.data.input_kind == "tokens" else torch.float32
    return torch.empty((DRY_BATCH, *sample_shape(spec.data)), dtype=dtype, device="meta")


def _too_big(model: nn.Module, sites: Sites, count: int, limit: int) -> SpecError:
    # Containers count nothing themselves; an operator module counts its own children.
    own = {
        qual: 0
        if type(module) in (nn.Sequential, Residual)
        else sum(p.numel() for p in module.parameters())
        for qual, module in model.named_modules()
        if qual in sites
    }
    biggest = max(own, key=lambda qual: own[qual])
    msg = (
        f"the model has {count:,} parameters; at most {limit:,} are allowed "
        f"(largest: {sites[biggest].label} with {own[biggest]:,})"
    )
    return SpecError.at(sites[biggest].loc, msg, label="")


def _target_words(spec: JobSpec) -> str:
    data = spec.data
    if data.dataset == "digits":
        return "on the digits dataset's 10 classes"
    if data.task == "classification":
        return f"on {data.num_classes} classes (data.num_classes)"
    return f"on {data.output_dim} regression targets (data.output_dim)"
