"""Build a spec's model, dry-run it on the meta device, and summarise it.

A spec names modules by string; only the classes in `shared.layers` (built-ins and the
operator's entry points) can be built, so a spec can never reach an arbitrary import
path. Every error is a `SpecError` whose message names the layer
(`model.layers[2] 'fc1' (Linear)`) and whose `details` carry the field path, so the API
can answer 400 before a worker ever sees the job.

Inputs of the dry run: float32 samples of `sample_shape(spec.data)`, or, when
`data.input_kind` is "tokens", int64 token ids of that shape (values do not exist on the
meta device, so only dtype and shape matter) for models that start with an Embedding.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shared.errors import SpecError
from shared.layers import LAYERS, Residual, operator_modules
from shared.netbuild import Sites, build_tree
from shared.netinit import apply_freeze, apply_init
from shared.netwalk import Shapes, Walk, run_children
from shared.spec import JobSpec, ModelSpec, output_width, sample_shape

__all__ = [
    "DEFAULT_MAX_PARAMS",
    "LAYERS",
    "MAX_QUALIFIED_NAME",
    "DryRun",
    "LayerRow",
    "ModelSummary",
    "ParamRow",
    "build_model",
    "checked_model",
    "dry_input",
    "dry_run",
    "estimate_train_bytes",
    "expected_state_shapes",
    "model_summary",
    "operator_modules",
]

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


def build_model(model: ModelSpec) -> nn.Sequential:
    """Build the spec's model on the default device, then apply its init rules and freezing.

    Seed torch first: construction and init rules draw from its generator. Run
    `dry_run` first for untrusted specs.
    """
    seq, _ = build_tree(model)
    apply_init(seq, model.init)
    apply_freeze(seq, model.freeze)
    return seq


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
        raise SpecError(msg, details=[{"loc": "model", "msg": msg}])
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
        raise SpecError(msg, details=[{"loc": "model", "msg": msg}])
    trainable = sum(p.numel() for p in params if p.requires_grad)
    if trainable == 0:  # freeze-all is refused by apply_freeze; this is a parameter-free model
        msg = "the model has no parameters to train: add a layer with weights (e.g. Linear)"
        raise SpecError(msg, details=[{"loc": "model", "msg": msg}])
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
    return SpecError(msg, details=[{"loc": sites[biggest].loc, "msg": msg}])


def _target_words(spec: JobSpec) -> str:
    data = spec.data
    if data.dataset == "digits":
        return "on the digits dataset's 10 classes"
    if data.task == "classification":
        return f"on {data.num_classes} classes (data.num_classes)"
    return f"on {data.output_dim} regression targets (data.output_dim)"


@dataclass(frozen=True, slots=True)
class LayerRow:
    """One module of the model, in the order the forward pass first calls it."""

    name: str  # qualified name, as in named_modules()
    type: str  # class name
    output_shape: list[int | str] | None  # first dimension "batch"; None: not a tensor / not called
    param_count: int  # its parameters and its children's


@dataclass(frozen=True, slots=True)
class ParamRow:
    """One entry of named_parameters()."""

    name: str
    shape: list[int]
    numel: int
    trainable: bool


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """What `POST /api/v1/models/summary` answers: the model as PyTorch would print it,
    its modules and parameters, sizes, and the training footprint at the spec's batch size.

    Shapes are per batch: their first dimension is the string "batch".
    """

    module_tree: str  # str(model), exactly what print(model) shows
    layers: list[LayerRow]
    parameters: list[ParamRow]
    param_count: int
    trainable_count: int
    frozen_count: int
    estimated_train_bytes: int
    output_shape: list[int | str]

    def to_json(self) -> dict[str, Any]:
        """Plain dicts, lists, strings, ints and bools."""
        return dataclasses.asdict(self)


def model_summary(spec: JobSpec, max_params: int = DEFAULT_MAX_PARAMS) -> ModelSummary:
    """Dry-run the spec (same errors as `dry_run`), then describe the model it builds."""
    model, report = checked_model(spec, max_params)
    return ModelSummary(
        module_tree=str(model),
        layers=_layer_rows(model, dry_input(spec)),
        parameters=[
            ParamRow(name, list(p.shape), p.numel(), p.requires_grad)
            for name, p in model.named_parameters()
        ],
        param_count=report.param_count,
        trainable_count=report.trainable_count,
        frozen_count=report.frozen_count,
        estimated_train_bytes=estimate_train_bytes(report, batch_size=spec.train.batch_size),
        output_shape=_batch_shape(report.output_shape),
    )


def expected_state_shapes(spec: JobSpec) -> dict[str, tuple[int, ...]]:
    """The model's state_dict keys (buffers included) and shapes, built on the meta device."""
    with torch.device("meta"):
        model = build_model(spec.model)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _layer_rows(model: nn.Module, x: torch.Tensor) -> list[LayerRow]:
    # Hooks record the order modules are entered (pre-hooks) and what they return, so
    # an operator module's own children show up too, in the order it calls them.
    order: list[str] = []
    shapes: dict[str, list[int | str] | None] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def enter(_m: nn.Module, _args: Any, name: str = name) -> None:
            if name not in shapes:
                order.append(name)
                shapes[name] = None

        def leave(_m: nn.Module, _args: Any, out: Any, name: str = name) -> None:
            if isinstance(out, torch.Tensor) and shapes.get(name) is None:
                shapes[name] = _batch_shape(tuple(out.shape))

        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    try:
        with torch.device("meta"), torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    modules = dict(model.named_modules())
    never_called = [name for name in modules if name and name not in shapes]
    return [
        LayerRow(
            name=name,
            type=type(modules[name]).__name__,
            output_shape=shapes.get(name),
            param_count=sum(p.numel() for p in modules[name].parameters()),
        )
        for name in [*order, *never_called]
    ]


def _batch_shape(shape: tuple[int, ...]) -> list[int | str]:
    return ["batch", *shape[1:]] if shape else []
