"""The seed notes' four models as layer specs.

`build_model` turns each into an `nn.Sequential` whose state_dict keys and shapes are
identical to the seed class, so a seed checkpoint loads with `strict=True`. The seed's
functional calls (`F.relu`, `F.max_pool2d`, `torch.flatten`) become parameter-free
modules, which changes no key.
"""

from __future__ import annotations

from typing import Any

from shared.errors import SpecError
from shared.spec import LayerSpec


def _layer(type_: str, name: str | None = None, **kwargs: Any) -> LayerSpec:
    return LayerSpec.model_validate({"type": type_, "name": name, **kwargs})


def _neural_network() -> list[LayerSpec]:
    # The seed nests its stack in a Sequential: keys are linear_relu_stack.0.weight etc.
    stack = [
        _layer("Linear", in_features=28 * 28, out_features=512),
        _layer("ReLU"),
        _layer("Linear", in_features=512, out_features=512),
        _layer("ReLU"),
        _layer("Linear", in_features=512, out_features=10),
    ]
    return [
        _layer("Flatten", "flatten"),
        LayerSpec(type="Sequential", name="linear_relu_stack", layers=stack),
    ]


def _lenet() -> list[LayerSpec]:
    return [
        _layer("Conv2d", "conv1", in_channels=1, out_channels=6, kernel_size=5),
        _layer("ReLU", "relu1"),
        _layer("MaxPool2d", "pool1", kernel_size=2),
        _layer("Conv2d", "conv2", in_channels=6, out_channels=16, kernel_size=5),
        _layer("ReLU", "relu2"),
        _layer("MaxPool2d", "pool2", kernel_size=2),
        _layer("Flatten", "flatten"),
        _layer("Linear", "fc1", in_features=16 * 5 * 5, out_features=120),
        _layer("ReLU", "relu3"),
        _layer("Linear", "fc2", in_features=120, out_features=84),
        _layer("ReLU", "relu4"),
        _layer("Linear", "fc3", in_features=84, out_features=10),
    ]


def _tiny_model() -> list[LayerSpec]:
    # The seed's Softmax() picks dim=1 implicitly (with a warning) for 2-D input.
    return [
        _layer("Linear", "linear1", in_features=100, out_features=200),
        _layer("ReLU", "activation"),
        _layer("Linear", "linear2", in_features=200, out_features=10),
        _layer("Softmax", "softmax", dim=1),
    ]


def _my_model() -> list[LayerSpec]:
    return [
        _layer("Linear", "fc1", in_features=10, out_features=5),
        _layer("ReLU", "relu"),
        _layer("Linear", "fc2", in_features=5, out_features=1),
    ]


PRESETS: dict[str, list[LayerSpec]] = {
    "neural_network": _neural_network(),
    "lenet": _lenet(),
    "tiny_model": _tiny_model(),
    "my_model": _my_model(),
}

_INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "neural_network": (1, 28, 28),
    "lenet": (1, 32, 32),
    "tiny_model": (100,),
    "my_model": (10,),
}


def preset_layers(name: str) -> list[LayerSpec]:
    """A fresh copy of a preset's layers (callers may change it freely)."""
    try:
        layers = PRESETS[name]
    except KeyError:
        raise SpecError(
            f"unknown preset '{name}'; choose one of {', '.join(sorted(PRESETS))}",
            details=[{"loc": "model.preset", "msg": f"unknown preset '{name}'"}],
        ) from None
    return [layer.model_copy(deep=True) for layer in layers]


def preset_input_shape(name: str) -> tuple[int, ...]:
    """The per-sample input shape (no batch dimension) the preset was written for."""
    preset_layers(name)  # same error for an unknown name
    return _INPUT_SHAPES[name]
