"""What the model is: layers (or a preset), initialisation, freezing, starting weights."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from shared.spec.base import Strict

# Child names become attribute names and state_dict key parts: keep them plain.
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # fullmatch: "fc\n" is no name
_GLOB_RE = r"^[A-Za-z0-9_.*?\[\]-]{1,255}$"
# A glob over parameter / state_dict names: matched with fnmatchcase, never a path.
Glob = Annotated[str, StringConstraints(pattern=_GLOB_RE)]
MAX_LAYERS = 256
MAX_DEPTH = 8
CONTAINERS = ("Sequential", "Residual")


class LayerSpec(BaseModel):
    """One `torch.nn` module: its class name, an optional child name, constructor kwargs.

    Extra keys are the constructor's keyword arguments, named as torch names them
    (`{"type": "Linear", "in_features": 784, "out_features": 10}`). A `Sequential` carries
    its children in `layers`; a `Residual` computes `body(x) + shortcut(x)` with its body
    in `layers` and an optional projection in `shortcut` (identity when absent).
    """

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    type: str = Field(min_length=1, max_length=64)
    name: str | None = None
    layers: list[LayerSpec] | None = None
    shortcut: list[LayerSpec] | None = None

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME_RE.fullmatch(value):
            raise ValueError("must be a Python identifier of at most 64 characters")
        return value

    @model_validator(mode="after")
    def _children_only_for_containers(self) -> LayerSpec:
        if self.type in CONTAINERS:
            if not self.layers:
                raise ValueError(f"a {self.type} needs a non-empty 'layers' list")
        elif self.layers is not None:
            raise ValueError(
                f"'layers' is only allowed on Sequential and Residual, not {self.type}"
            )
        if self.shortcut is not None and (self.type != "Residual" or not self.shortcut):
            raise ValueError("'shortcut' is a non-empty layer list, only on Residual")
        return self

    def kwargs(self) -> dict[str, Any]:
        """Constructor keyword arguments (everything but type, name, layers, shortcut)."""
        return dict(self.model_extra or {})


InitScheme = Literal[
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
    "normal",
    "uniform",
    "zeros",
    "ones",
    "constant",
]


class InitRule(Strict):
    """Initialise every parameter whose name matches `params` (a glob) with `scheme`.

    Rules apply in order after the model is built, under the job's seed, so a later
    rule wins where two match. `torch.nn.init` does the work.
    """

    params: Glob = Field(description="glob over named_parameters(), e.g. 'conv*.weight'")
    scheme: InitScheme
    gain: float = Field(default=1.0, gt=0.0, le=100.0, description="xavier_*, orthogonal")
    nonlinearity: Literal["relu", "leaky_relu", "linear", "tanh", "sigmoid", "selu"] = "relu"
    mode: Literal["fan_in", "fan_out"] = "fan_in"
    a: float = Field(default=0.0, ge=0.0, le=10.0, description="kaiming_*: leaky_relu slope")
    mean: float = Field(default=0.0, ge=-1e3, le=1e3, description="normal")
    std: float = Field(default=0.01, gt=0.0, le=1e3, description="normal")
    low: float = Field(default=-0.05, ge=-1e3, le=1e3, description="uniform")
    high: float = Field(default=0.05, ge=-1e3, le=1e3, description="uniform")
    value: float = Field(default=0.0, ge=-1e6, le=1e6, description="constant")

    @model_validator(mode="after")
    def _ordered_bounds(self) -> InitRule:
        if self.scheme == "uniform" and self.low >= self.high:
            raise ValueError("uniform needs low < high")
        return self


class InitFrom(Strict):
    """Start from another of the caller's jobs' checkpoint (fine-tuning)."""

    job_id: uuid.UUID
    checkpoint: str = Field(
        default="final", max_length=64, description="final | latest | best | checkpoint id"
    )
    strict: bool = Field(default=True, description="every key of the model must be loaded")
    skip: list[Glob] = Field(
        default_factory=list, max_length=64, description="state_dict key globs not loaded"
    )


class ModelSpec(Strict):
    """Either a named preset from the seed notes, or a list of layers run in order."""

    preset: Literal["neural_network", "lenet", "tiny_model", "my_model"] | None = None
    layers: list[LayerSpec] | None = None
    init: list[InitRule] = Field(default_factory=list, max_length=64)
    freeze: list[Glob] = Field(
        default_factory=list,
        max_length=64,
        description="globs over parameter names: requires_grad=False, kept out of the optimizer",
    )
    init_from: InitFrom | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSpec:
        if (self.preset is None) == (self.layers is None):
            raise ValueError("give exactly one of 'preset' or 'layers'")
        if self.layers is not None:
            if not self.layers:
                raise ValueError("'layers' must not be empty")
            _check_tree(self.layers)
        return self


def _check_tree(layers: list[LayerSpec]) -> None:
    count = 0

    def walk(items: list[LayerSpec], depth: int) -> None:
        nonlocal count
        if depth > MAX_DEPTH:
            raise ValueError(f"layers nest deeper than {MAX_DEPTH} levels")
        for item in items:
            count += 1
            for children in (item.layers, item.shortcut):
                if children:
                    walk(children, depth + 1)

    walk(layers, 1)
    if count > MAX_LAYERS:
        raise ValueError(f"{count} layers in all; at most {MAX_LAYERS} are allowed")
