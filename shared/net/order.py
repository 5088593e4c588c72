"""A model's own order of module and parameter names, to sort trace rows by.

Trace rows come back from the database sorted by name ("conv1.bias" before
"conv1.weight", "layers.10" before "layers.2"), and a probe reduces tensors in the order
they arrive; the model is the only record of its own order. Probes sort a step's rows
with it, plots their rows and heatmap lines.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn


class LayerOrder:
    """Positions of module names (in `named_modules()` order), then parameter names."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._position: dict[str, int] = {}
        for name in names:
            self._position.setdefault(name, len(self._position))

    @classmethod
    def of(cls, model: nn.Module) -> LayerOrder:
        """The order of `model`: its modules, then its parameters."""
        modules = (name for name, _ in model.named_modules() if name)
        return cls([*modules, *(name for name, _ in model.named_parameters())])

    def key(self, layer: str) -> tuple[int, int]:
        """Sort key of a trace row's layer: its module's position (unknown names last),
        and a module's input gradient ("fc2:input") right after the module itself."""
        module, _, port = layer.partition(":")
        return self._position.get(module, len(self._position)), 1 if port else 0

    def __len__(self) -> int:
        return len(self._position)
