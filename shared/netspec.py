"""Layer registry, model builder, and a dry run on the meta device.

A spec names `torch.nn` classes by string; only the classes in `LAYERS` can be built,
so a spec can never reach an arbitrary import path. Every error is a `SpecError` whose
message names the layer (`model.layers[2] 'fc1' (Linear)`) and whose `details` carry
the field path, so the API can answer 400 before a worker ever sees the job.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import NoReturn

import torch
from torch import nn

from shared.errors import SpecError
from shared.presets import preset_layers
from shared.spec import JobSpec, LayerSpec, ModelSpec, output_width, sample_shape

LAYERS: dict[str, type[nn.Module]] = {
    cls.__name__: cls
    for cls in (
        nn.Linear,
        nn.Conv1d,
        nn.Conv2d,
        nn.MaxPool2d,
        nn.AvgPool2d,
        nn.AdaptiveAvgPool2d,
        nn.BatchNorm1d,
        nn.BatchNorm2d,
        nn.LayerNorm,
        nn.Dropout,
        nn.Flatten,
        nn.Unflatten,
        nn.Identity,
        nn.ReLU,
        nn.LeakyReLU,
        nn.GELU,
        nn.Tanh,
        nn.Sigmoid,
        nn.Softmax,
        nn.LogSoftmax,
        nn.Sequential,  # a container: built from its `layers`, never from kwargs
    )
}

DEFAULT_MAX_PARAMS = 50_000_000
# Trace rows store a module's dotted path in a 255-character column; parameter names
# add ".weight" / ".bias" to it.
MAX_QUALIFIED_NAME = 240

# The worker decides where and in what precision the model lives.
_PLACED_BY_WORKER = frozenset({"device", "dtype"})


@dataclass(frozen=True, slots=True)
class _Site:
    loc: str  # field path for `details`, e.g. "model.layers[2]"
    label: str  # what a person reads, e.g. "model.layers[2] 'fc1' (Linear)"


SiteOf = Callable[[str, str, LayerSpec], _Site]  # (field path, qualified name, layer) -> site


@dataclass(frozen=True, slots=True)
class DryRun:
    """What a dry run learned: sizes, and each leaf layer's output shape for a batch of 2."""

    param_count: int
    trainable_count: int
    output_shape: tuple[int, ...]
    layer_shapes: list[tuple[str, str, tuple[int, ...]]]  # (qualified name, type, shape)


def estimate_train_bytes(report: DryRun, *, batch_size: int) -> int:
    """A rough float32 training footprint: weights + grads + two optimizer moments, plus
    each layer's output and its gradient for one batch (what autograd keeps alive)."""
    activations = sum(math.prod(shape[1:]) for _, _, shape in report.layer_shapes)
    return 4 * (4 * report.param_count + 2 * activations * batch_size)


def build_model(model: ModelSpec) -> nn.Sequential:
    """Build the spec's model on the default device (`dry_run` first for untrusted specs)."""
    return _build(model)[0]


def dry_run(spec: JobSpec, max_params: int = DEFAULT_MAX_PARAMS) -> DryRun:
    """Build on the meta device and push a batch of 2 through it: checks sizes and shapes."""
    with torch.device("meta"):
        model, sites = _build(spec.model)
    too_long = next((n for n, _ in model.named_modules() if len(n) > MAX_QUALIFIED_NAME), None)
    if too_long is not None:
        msg = f"layer path '{too_long[:60]}...' is longer than {MAX_QUALIFIED_NAME} characters"
        raise SpecError(msg, details=[{"loc": "model", "msg": msg}])
    params = list(model.parameters())
    param_count = sum(p.numel() for p in params)
    if param_count > max_params:
        raise _too_big(model, sites, param_count, max_params)

    shapes: list[tuple[str, str, tuple[int, ...]]] = []
    x = torch.empty((2, *sample_shape(spec.data)), device="meta")
    out = _forward(model, x, "", sites, shapes)
    width = output_width(spec)
    if tuple(out.shape) != (2, width):
        msg = (
            f"the model outputs shape {tuple(out.shape)} for a batch of 2, but "
            f"{spec.train.loss} {_target_words(spec)} needs (batch, {width}): "
            f"make the last layer output {width} values"
        )
        raise SpecError(msg, details=[{"loc": "model", "msg": msg}])
    return DryRun(
        param_count=param_count,
        trainable_count=sum(p.numel() for p in params if p.requires_grad),
        output_shape=tuple(out.shape),
        layer_shapes=shapes,
    )


def _build(model: ModelSpec) -> tuple[nn.Sequential, dict[str, _Site]]:
    sites: dict[str, _Site] = {}
    if model.preset is not None:
        preset = model.preset

        def site_of(loc: str, qual: str, layer: LayerSpec) -> _Site:
            return _Site("model.preset", f"model.preset '{preset}' layer '{qual}' ({layer.type})")

        return _container(preset_layers(preset), "model", "", site_of, sites), sites

    def user_site(loc: str, qual: str, layer: LayerSpec) -> _Site:
        named = f" '{layer.name}'" if layer.name else ""
        return _Site(loc, f"{loc}{named} ({layer.type})")

    assert model.layers is not None  # ModelSpec guarantees exactly one of preset / layers
    return _container(model.layers, "model", "", user_site, sites), sites


def _container(
    layers: list[LayerSpec], loc: str, prefix: str, site_of: SiteOf, sites: dict[str, _Site]
) -> nn.Sequential:
    # Children are added one by one (as Sequential(OrderedDict) would) so that a name
    # clash is reported against the layer that caused it.
    seq = nn.Sequential()
    for index, layer in enumerate(layers):
        name = layer.name if layer.name is not None else str(index)
        qual = prefix + name
        site = site_of(f"{loc}.layers[{index}]", qual, layer)
        if name in seq._modules:
            _fail(site, "name", f"duplicate layer name '{name}' in the same Sequential")
        if layer.type == "Sequential":
            if layer.kwargs():
                _fail(site, next(iter(layer.kwargs())), "a Sequential takes only 'layers'")
            assert layer.layers is not None  # LayerSpec guarantees children for Sequential
            module: nn.Module = _container(layer.layers, site.loc, qual + ".", site_of, sites)
        else:
            module = _leaf(layer, site)
        try:
            seq.add_module(name, module)
        except KeyError:
            _fail(site, "name", f"the name '{name}' is taken by an nn.Module attribute")
        sites[qual] = site
    return seq


def _leaf(layer: LayerSpec, site: _Site) -> nn.Module:
    cls = LAYERS.get(layer.type)
    if cls is None:
        allowed = ", ".join(sorted(LAYERS))
        _fail(site, "type", f"unknown layer type '{layer.type}'; allowed types: {allowed}")
    kwargs = layer.kwargs()
    accepted = _arguments(layer.type)
    for arg in kwargs:
        if arg in _PLACED_BY_WORKER:
            _fail(site, arg, f"argument '{arg}' is not allowed: the worker places the model")
        if arg not in accepted:
            close = difflib.get_close_matches(arg, list(accepted), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            known = ", ".join(accepted) or "none"
            _fail(site, arg, f"unknown argument '{arg}'{hint}; accepted: {known}")
    for arg, required in accepted.items():
        if required and arg not in kwargs:
            _fail(site, arg, f"missing required argument '{arg}'")
    for arg, value in kwargs.items():
        problem = _type_problem(_defaults(layer.type).get(arg), value)
        if problem:
            _fail(site, arg, f"argument '{arg}' {problem}, got {value!r:.40}")
    try:
        return cls(**kwargs)
    except Exception as exc:  # any failure on user-supplied values is a spec problem
        _fail(site, None, f"invalid arguments: {_first_line(exc)}")


def _type_problem(default: object, value: object) -> str | None:
    """Why `value` cannot stand where torch's default is `default` (None when it can).

    Only what the default proves is checked: a bool flag must be a bool (torch would
    read the string "false" as True), a float must be a number. Other arguments take
    ints, tuples or strings alike (Conv2d padding=1 or "same") and torch checks them.
    """
    if isinstance(value, dict):
        return "must not be an object"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(default, float) and (
        isinstance(value, bool) or not isinstance(value, int | float)
    ):
        return "must be a number"
    return None


@cache
def _defaults(type_name: str) -> dict[str, object]:
    """Constructor defaults by argument name (arguments without one are left out)."""
    params = inspect.signature(LAYERS[type_name]).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


@cache
def _arguments(type_name: str) -> dict[str, bool]:
    """Named constructor arguments a spec may pass, mapped to whether each is required."""
    # *args / **kwargs are left out on purpose: Identity swallows anything, which would
    # hide typos.
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {
        name: param.default is inspect.Parameter.empty
        for name, param in inspect.signature(LAYERS[type_name]).parameters.items()
        if param.kind in kinds and name not in _PLACED_BY_WORKER
    }


def _forward(
    seq: nn.Sequential,
    x: torch.Tensor,
    prefix: str,
    sites: dict[str, _Site],
    shapes: list[tuple[str, str, tuple[int, ...]]],
) -> torch.Tensor:
    # Leaf by leaf rather than model(x), so a failure names the layer that failed.
    for name, child in seq.named_children():
        qual = prefix + name
        if isinstance(child, nn.Sequential):
            x = _forward(child, x, qual + ".", sites, shapes)
            continue
        shape = tuple(x.shape)
        problem = _input_problem(child, shape)
        if problem is None:
            try:
                out = child(x)
            except Exception as exc:  # torch's own shape errors, reworded below
                problem = f"{_first_line(exc)} (input shape {shape})"
            else:
                if not isinstance(out, torch.Tensor):
                    problem = f"returns {type(out).__name__}, not a tensor"
        if problem is not None:
            _fail(sites[qual], None, problem)
        x = out
        shapes.append((qual, type(child).__name__, tuple(x.shape)))
    return x


def _input_problem(module: nn.Module, shape: tuple[int, ...]) -> str | None:
    """A plain-words shape complaint for the common layers, before torch's own message."""
    got = f"(input shape {shape})"
    if isinstance(module, nn.Linear):
        if shape[-1] != module.in_features:
            return f"expects last dimension {module.in_features}, got {shape[-1]} {got}"
    elif isinstance(module, nn.Conv1d | nn.Conv2d):
        rank = 3 if isinstance(module, nn.Conv1d) else 4
        if len(shape) != rank:
            return f"expects {rank}-D input (batch, channels, ...) {got}"
        if shape[1] != module.in_channels:
            return f"expects {module.in_channels} input channels, got {shape[1]} {got}"
    elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        ranks = (2, 3) if isinstance(module, nn.BatchNorm1d) else (4,)
        if len(shape) not in ranks:
            return f"expects {' or '.join(str(r) for r in ranks)}-D input {got}"
        if shape[1] != module.num_features:
            return f"expects {module.num_features} features in dimension 1, got {shape[1]} {got}"
    elif isinstance(module, nn.LayerNorm):
        want = tuple(module.normalized_shape)
        if shape[-len(want) :] != want:
            return f"expects trailing dimensions {want} {got}"
    return None


def _too_big(model: nn.Module, sites: dict[str, _Site], count: int, limit: int) -> SpecError:
    own = {
        qual: sum(p.numel() for p in module.parameters(recurse=False))
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


def _fail(site: _Site, arg: str | None, problem: str) -> NoReturn:
    loc = f"{site.loc}.{arg}" if arg else site.loc
    raise SpecError(f"{site.label}: {problem}", details=[{"loc": loc, "msg": problem}])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
