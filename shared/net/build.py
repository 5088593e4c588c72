"""Turn a spec's layer tree into modules, checking every constructor argument first.

Each module built is remembered with its `Site` (field path + a readable label), so a
later failure - a shape in the dry run, an init rule - can name the layer it concerns.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from shared.errors import SpecError
from shared.net.init_freeze import apply_freeze, apply_init
from shared.net.layers import (
    PLACED_BY_WORKER,
    Bilinear,
    Residual,
    arguments,
    defaults,
    known_types,
    layer_class,
)
from shared.net.presets import preset_layers
from shared.spec import LayerSpec, ModelSpec


@dataclass(frozen=True, slots=True)
class Site:
    """Where a layer sits in the spec."""

    loc: str  # field path for `details`, e.g. "model.layers[2]"
    label: str  # what a person reads, e.g. "model.layers[2] 'fc1' (Linear)"

    def error(self, problem: str, arg: str | None = None) -> SpecError:
        """The SpecError for `problem` at this layer (and its argument `arg`, if any)."""
        return SpecError.at(f"{self.loc}.{arg}" if arg else self.loc, problem, label=self.label)


SiteOf = Callable[[str, str, LayerSpec], Site]  # (field path, qualified name, layer) -> site
Sites = dict[str, Site]  # qualified module name -> site


def build_model(model: ModelSpec) -> nn.Sequential:
    """Build the spec's model on the default device, then apply its init rules and freezing.

    Seed torch first: construction and init rules draw from its generator. Check
    untrusted specs first (`shared.spec_check.check_spec`).
    """
    seq, _ = build_tree(model)
    apply_init(seq, model.init)
    apply_freeze(seq, model.freeze)
    return seq


def build_tree(model: ModelSpec) -> tuple[nn.Sequential, Sites]:
    """The spec's modules (no init rules, no freezing) and the site of each spec layer."""
    sites: Sites = {}
    if model.preset is not None:
        preset = model.preset

        def site_of(loc: str, qual: str, layer: LayerSpec) -> Site:
            return Site("model.preset", f"model.preset '{preset}' layer '{qual}' ({layer.type})")

        return _container(preset_layers(preset), "model.layers", "", site_of, sites), sites

    def user_site(loc: str, qual: str, layer: LayerSpec) -> Site:
        named = f" '{layer.name}'" if layer.name else ""
        return Site(loc, f"{loc}{named} ({layer.type})")

    assert model.layers is not None  # ModelSpec guarantees exactly one of preset / layers
    return _container(model.layers, "model.layers", "", user_site, sites), sites


def _container(
    layers: list[LayerSpec],
    loc: str,
    prefix: str,
    site_of: SiteOf,
    sites: Sites,
    kind: str = "Sequential",
) -> nn.Sequential:
    # Children are added one by one (as Sequential(OrderedDict) would) so that a name
    # clash is reported against the layer that caused it. `loc` is the list's field path.
    seq = nn.Sequential()
    for index, layer in enumerate(layers):
        name = layer.name if layer.name is not None else str(index)
        qual = prefix + name
        site = site_of(f"{loc}[{index}]", qual, layer)
        if name in seq._modules:
            raise site.error(f"duplicate layer name '{name}' in the same {kind}", "name")
        module: nn.Module
        if layer.type == "Sequential":
            if layer.kwargs():
                raise site.error("a Sequential takes only 'layers'", next(iter(layer.kwargs())))
            assert layer.layers is not None  # LayerSpec guarantees children for containers
            module = _container(layer.layers, f"{site.loc}.layers", qual + ".", site_of, sites)
        elif layer.type == "Residual":
            module = _residual(layer, site, qual, site_of, sites)
        else:
            module = _leaf(layer, site)
        try:
            seq.add_module(name, module)
        except KeyError:
            problem = f"the name '{name}' is taken by an nn.Module attribute"
            raise site.error(problem, "name") from None
        sites[qual] = site
    return seq


def _residual(layer: LayerSpec, site: Site, qual: str, site_of: SiteOf, sites: Sites) -> Residual:
    if layer.kwargs():
        first = next(iter(layer.kwargs()))
        raise site.error("a Residual takes only 'layers' and 'shortcut'", first)
    assert layer.layers is not None  # LayerSpec guarantees a body for Residual
    loc = site.loc
    body = _container(layer.layers, f"{loc}.layers", f"{qual}.body.", site_of, sites, "body")
    shortcut = None
    if layer.shortcut:
        prefix = f"{qual}.shortcut."
        shortcut = _container(layer.shortcut, f"{loc}.shortcut", prefix, site_of, sites, "shortcut")
    return Residual(body, shortcut)


def _leaf(layer: LayerSpec, site: Site) -> nn.Module:
    cls = layer_class(layer.type)
    if cls is None:
        allowed = ", ".join(known_types())
        raise site.error(f"unknown layer type '{layer.type}'; allowed types: {allowed}", "type")
    kwargs = layer.kwargs()
    accepted = arguments(cls)
    for arg in kwargs:
        if arg in PLACED_BY_WORKER:
            raise site.error(f"argument '{arg}' is not allowed: the worker places the model", arg)
        if arg not in accepted:
            close = difflib.get_close_matches(arg, list(accepted), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            known = ", ".join(accepted) or "none"
            raise site.error(f"unknown argument '{arg}'{hint}; accepted: {known}", arg)
    for arg, required in accepted.items():
        if required and arg not in kwargs:
            raise site.error(f"missing required argument '{arg}'", arg)
    for arg, value in kwargs.items():
        problem = _type_problem(defaults(cls).get(arg), value)
        if problem:
            raise site.error(f"argument '{arg}' {problem}, got {value!r:.40}", arg)
    _check_special(cls, kwargs, site)
    try:
        return cls(**kwargs)
    except Exception as exc:  # any failure on user-supplied values is a spec problem
        raise site.error(f"invalid arguments: {first_line(exc)}") from None


def _check_special(cls: type[nn.Module], kwargs: dict[str, Any], site: Site) -> None:
    """Rules for one class that its constructor does not state in words of the spec."""
    if cls is Bilinear and kwargs["in1_features"] != kwargs["in2_features"]:
        raise site.error(
            f"in1_features ({kwargs['in1_features']}) must equal in2_features "
            f"({kwargs['in2_features']}): in a layer stack both inputs are the previous "
            "layer's output",
            "in2_features",
        )
    if cls is nn.Embedding and kwargs.get("sparse") is True:
        raise site.error("sparse gradients are not supported: leave 'sparse' false", "sparse")


def _type_problem(default: object, value: object) -> str | None:
    """Why `value` cannot stand where torch's default is `default` (None when it can).

    Only what the default proves is checked: a bool flag must be a bool (torch would
    read the string "false" as True), a float must be a number. Other arguments take
    ints, tuples or strings alike (Conv2d padding=1 or "same") and torch checks them.
    """
    if isinstance(value, dict):
        return "must not be an object"
    if not _finite(value):
        return "must be finite (no NaN or Infinity)"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(default, float) and (
        isinstance(value, bool) or not isinstance(value, int | float)
    ):
        return "must be a number"
    return None


def _finite(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (torch's can run to many lines)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
