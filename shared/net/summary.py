"""What a spec builds, as PyTorch would show it: print(model), modules, named_parameters.

`POST /api/v1/models/summary` answers with a `ModelSummary`; job summaries show part of it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shared.net.dryrun import DryRun, dry_input, estimate_train_bytes
from shared.spec import JobSpec


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


def model_summary(spec: JobSpec, model: nn.Sequential, report: DryRun) -> ModelSummary:
    """Describe the model a checked spec builds: `model` and `report` are what its dry run
    (`checked_model`, or `check_spec` for a whole submission) returned."""
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
