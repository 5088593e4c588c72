"""Which `nn.Module` classes a spec may name, and what their constructors accept.

Two sources, both allow-lists: `LAYERS` (torch classes plus the two modules a layer stack
needs, `Bilinear` and `Residual`), and classes the operator installs on the workers and
exposes through the `trainyard.modules` entry-point group. A spec names a class by a
short string, never by an import path, and users never send code.
"""

from __future__ import annotations

import inspect
import logging
from functools import cache
from importlib.metadata import EntryPoint, entry_points

import torch
from torch import nn

ENTRY_POINT_GROUP = "trainyard.modules"

# The worker decides where and in what precision the model lives.
PLACED_BY_WORKER = frozenset({"device", "dtype"})

log = logging.getLogger(__name__)


class Bilinear(nn.Bilinear):
    """`nn.Bilinear` for a layer stack: both inputs are the previous layer's output.

    Same parameters and state_dict keys (`weight`, `bias`) as `nn.Bilinear`.
    """

    def __init__(
        self,
        in1_features: int,
        in2_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if in1_features != in2_features:
            raise ValueError(
                f"in1_features ({in1_features}) must equal in2_features ({in2_features}): "
                "in a layer stack both inputs are the previous layer's output"
            )
        super().__init__(in1_features, in2_features, out_features, bias, device, dtype)

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """bilinear(x, x)."""
        return super().forward(input, input)


class Residual(nn.Module):
    """`body(x) + shortcut(x)`; the shortcut is the identity when no projection is given."""

    def __init__(self, body: nn.Sequential, shortcut: nn.Sequential | None = None) -> None:
        super().__init__()
        self.body = body
        self.shortcut: nn.Module = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of the two branches (same shape: the dry run checks it)."""
        out: torch.Tensor = self.body(x) + self.shortcut(x)
        return out


LAYERS: dict[str, type[nn.Module]] = {
    cls.__name__: cls
    for cls in (
        nn.Linear,
        Bilinear,
        nn.Conv1d,
        nn.Conv2d,
        nn.Conv3d,
        nn.ConvTranspose2d,
        nn.MaxPool1d,
        nn.MaxPool2d,
        nn.AvgPool2d,
        nn.AdaptiveAvgPool2d,
        nn.BatchNorm1d,
        nn.BatchNorm2d,
        nn.GroupNorm,
        nn.LayerNorm,
        nn.Dropout,
        nn.Dropout2d,
        nn.Embedding,
        nn.Flatten,
        nn.Unflatten,
        nn.Identity,
        nn.ReLU,
        nn.LeakyReLU,
        nn.GELU,
        nn.SiLU,
        nn.ELU,
        nn.Tanh,
        nn.Sigmoid,
        nn.Softmax,
        nn.LogSoftmax,
        nn.Sequential,
        Residual,
    )
}


def operator_modules(*, reload: bool = False) -> dict[str, type[nn.Module]]:
    """Classes from the `trainyard.modules` entry points, loaded once (`reload=True` rescans).

    An entry point that fails to import, is not an `nn.Module` subclass, or reuses a
    built-in name is skipped with a warning: a bad install never breaks the API.
    """
    if reload:
        _load_operator_modules.cache_clear()
    return _load_operator_modules()


@cache
def _load_operator_modules() -> dict[str, type[nn.Module]]:
    found: dict[str, type[nn.Module]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in LAYERS:
            log.warning("operator module %r (%s) reuses a built-in name: skipped", *_ep(ep))
            continue
        if ep.name in found:
            log.warning("operator module %r (%s) is defined twice: skipped", *_ep(ep))
            continue
        try:
            obj = ep.load()
        except Exception as exc:  # an operator's broken install must not take the API down
            log.warning("operator module %r (%s) failed to load: %s", *_ep(ep), exc)
            continue
        if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
            log.warning("operator module %r (%s) is not an nn.Module class: skipped", *_ep(ep))
            continue
        found[ep.name] = obj
    return found


def _ep(ep: EntryPoint) -> tuple[str, str]:
    return ep.name, ep.value


def layer_class(type_name: str) -> type[nn.Module] | None:
    """The class a spec `type` names: a built-in first, then an operator module."""
    return LAYERS.get(type_name) or operator_modules().get(type_name)


def known_types() -> list[str]:
    """Every name a spec `type` may use, sorted."""
    return sorted({*LAYERS, *operator_modules()})


def arguments(cls: type[nn.Module]) -> dict[str, bool]:
    """Named constructor arguments a spec may pass, mapped to whether each is required.

    *args / **kwargs are left out on purpose (Identity swallows anything, which would
    hide typos), and so are private ones (Embedding's `_weight` takes a tensor).
    """
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {
        name: param.default is inspect.Parameter.empty
        for name, param in inspect.signature(cls).parameters.items()
        if param.kind in kinds and name not in PLACED_BY_WORKER and not name.startswith("_")
    }


def defaults(cls: type[nn.Module]) -> dict[str, object]:
    """Constructor defaults by argument name (arguments without one are left out)."""
    params = inspect.signature(cls).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
