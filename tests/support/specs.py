"""Example specs that several test modules train or submit."""

from __future__ import annotations

from typing import Any

# MyModel (10 -> 5 -> 1) on 64 synthetic regression samples: trains in milliseconds.
TINY: dict[str, Any] = {
    "model": {"preset": "my_model"},
    "data": {"dataset": "synthetic", "task": "regression", "input_shape": [10], "size": 64},
    "train": {"loss": "MSELoss", "batch_size": 8},
}

# The seed's Net (LeNet) on the bundled digits at 32 x 32: the demo job.
LENET: dict[str, Any] = {
    "model": {"preset": "lenet"},
    "data": {"dataset": "digits", "image_size": 32},
    "train": {"epochs": 1, "batch_size": 32},
}

# A small MLP on the 8 x 8 digits (fc1, head).
MLP: list[dict[str, Any]] = [
    {"type": "Flatten"},
    {"type": "Linear", "name": "fc1", "in_features": 64, "out_features": 32},
    {"type": "ReLU"},
    {"type": "Linear", "name": "head", "in_features": 32, "out_features": 10},
]

# The MLP trained with SGD: the base spec of the sweep tests (their space moves the lr).
MLP_SGD: dict[str, Any] = {
    "model": {"layers": MLP},
    "data": {"dataset": "digits", "val_fraction": 0.2},
    "train": {"epochs": 1, "optimizer": {"name": "SGD", "lr": 0.1}},
}

# A small residual CNN on the digits: a stem, two Residual blocks (one projected), a head.
RESNETISH: list[dict[str, Any]] = [
    {"type": "Conv2d", "name": "stem", "in_channels": 1, "out_channels": 8, "kernel_size": 3,
     "padding": 1},
    {"type": "Residual", "name": "block1", "layers": [
        {"type": "Conv2d", "in_channels": 8, "out_channels": 8, "kernel_size": 3, "padding": 1},
        {"type": "BatchNorm2d", "num_features": 8}, {"type": "ReLU"}]},
    {"type": "Residual", "name": "block2", "layers": [
        {"type": "Conv2d", "in_channels": 8, "out_channels": 16, "kernel_size": 3, "padding": 1},
        {"type": "BatchNorm2d", "num_features": 16}],
     "shortcut": [{"type": "Conv2d", "in_channels": 8, "out_channels": 16, "kernel_size": 1}]},
    {"type": "AdaptiveAvgPool2d", "output_size": 1},
    {"type": "Flatten"},
    {"type": "Linear", "name": "fc", "in_features": 16, "out_features": 10},
]  # fmt: skip
