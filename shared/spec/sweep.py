"""A sweep request: a base job spec, a search space over spec paths, how to search and
when to stop a trial early. Checked by pydantic here; the base spec and the paths are
checked against each other by `shared.sweeps.checks`."""

from __future__ import annotations

import builtins
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)

from shared.spec.base import Strict

# train.optimizer.lr, model.layers[2].out_features, data.transforms[0].p
PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\[[0-9]{1,4}\]|\.[A-Za-z_][A-Za-z0-9_]*)*$"
SpecPath = Annotated[str, StringConstraints(pattern=PATH_PATTERN, max_length=200)]
Scalar = bool | int | float | str | None
MAX_GRID_POINTS = 10_000
# What a trial records at epoch ends (train/loss per step and epoch_loss per epoch; the
# evaluation splits their loss and, for classification, accuracy).
TRAIN_METRICS = frozenset({"loss", "epoch_loss"})
EVAL_METRICS = frozenset({"loss", "accuracy"})


class Uniform(Strict):
    uniform: tuple[float, float]

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if not self.uniform[0] < self.uniform[1]:
            raise ValueError("uniform needs [low, high] with low < high")
        return self


class LogUniform(Strict):
    log_uniform: tuple[float, float]

    @model_validator(mode="after")
    def _ordered(self) -> LogUniform:
        low, high = self.log_uniform
        if not 0 < low < high:
            raise ValueError("log_uniform needs [low, high] with 0 < low < high")
        return self


class IntRange(Strict):
    int: tuple[builtins.int, builtins.int]
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        low, high = self.int
        if not low < high or (self.log and low < 1):
            raise ValueError("int needs [low, high] with low < high (and low >= 1 with log)")
        return self

    def count(self) -> builtins.int:
        """How many integers the range holds."""
        return self.int[1] - self.int[0] + 1

    def values(self) -> list[builtins.int]:
        """Every integer of the range: what a grid search tries."""
        return list(range(self.int[0], self.int[1] + 1))


class Choice(Strict):
    choice: list[Scalar] = Field(min_length=1, max_length=1000)

    @field_validator("choice")
    @classmethod
    def _distinct(cls, values: list[Scalar]) -> list[Scalar]:
        if len({repr(v) for v in values}) != len(values):
            raise ValueError("choice values must be distinct")
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ValueError("choice values must be finite")
        return values


DISTRIBUTION_KEYS = ("uniform", "log_uniform", "int", "choice")


def _distribution_kind(value: Any) -> str | None:
    """Which distribution an object is, by its one key (errors then name only that one)."""
    for key in DISTRIBUTION_KEYS:
        if (isinstance(value, dict) and key in value) or hasattr(value, key):
            return key
    return None


Distribution = Annotated[
    Annotated[Uniform, Tag("uniform")]
    | Annotated[LogUniform, Tag("log_uniform")]
    | Annotated[IntRange, Tag("int")]
    | Annotated[Choice, Tag("choice")],
    Discriminator(
        _distribution_kind,
        custom_error_type="distribution",
        custom_error_message='a distribution is one of {"uniform": [a, b]}, '
        '{"log_uniform": [a, b]}, {"int": [a, b]}, {"choice": [...]}',
    ),
]


class AshaSpec(Strict):
    """Asynchronous successive halving on the metric at epoch rungs: at epochs
    min_epochs, min_epochs * r, min_epochs * r^2, ... a trial goes on only while it is in
    the best 1/r of the trials that reached that rung."""

    reduction_factor: int = Field(default=3, ge=2, le=10)
    min_epochs: int = Field(default=1, ge=1, le=10_000)


class GradientStopSpec(Strict):
    """Stop a trial whose probes show it is broken: its hooks.alerts, with stop. A
    non-finite loss prunes it too."""

    exploding_above: float | None = Field(default=1e3, gt=0.0, le=1e12)
    vanishing_below: float | None = Field(default=None, gt=0.0, le=1e6)
    vanishing_steps: int = Field(default=10, ge=1, le=1_000_000)
    dead_above: float | None = Field(default=None, gt=0.0, le=1.0)


class EarlyStopSpec(Strict):
    asha: AshaSpec | None = None
    gradient: GradientStopSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, raw: Any) -> Any:
        # "asha", "gradient" or ["asha", "gradient"]: those rules with their defaults.
        if isinstance(raw, str):
            raw = [raw]
        if isinstance(raw, list) and all(isinstance(name, str) for name in raw):
            unknown = sorted(set(raw) - {"asha", "gradient"})
            if unknown:
                raise ValueError(f"unknown early_stop rule(s) {unknown}: use asha, gradient")
            return {name: {} for name in raw}
        return raw


class SweepSpec(Strict):
    """What POST /api/v1/sweeps takes."""

    name: str = Field(default="", max_length=128)
    spec: dict[str, Any] = Field(description="the base training job spec (as POST /jobs)")
    space: dict[SpecPath, Distribution] = Field(
        min_length=1,
        max_length=32,
        description='spec path -> distribution: {"uniform": [a, b]}, {"log_uniform": [a, b]}, '
        '{"int": [a, b]}, {"choice": [...]}',
    )
    method: Literal["grid", "random", "tpe"] = "tpe"
    metric: Annotated[str, StringConstraints(pattern=r"^(train|val|test)/[a-z_]{1,60}$")] = (
        "val/accuracy"
    )
    goal: Literal["minimize", "maximize"] = "maximize"
    max_trials: int = Field(default=10, ge=1, le=1000)
    parallel: int = Field(default=2, ge=1, le=64, description="trials running at once")
    early_stop: EarlyStopSpec | None = None
    priority: int = Field(default=5, ge=0, le=9, description="of every trial's job")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="of the sampler")

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        if self.method == "grid":
            points = 1
            for path, dist in self.space.items():
                if not isinstance(dist, Choice | IntRange):
                    raise ValueError(f"grid search needs choice or int ranges; {path} is neither")
                # Counted, not listed: an int range may be huge.
                points *= len(dist.choice) if isinstance(dist, Choice) else dist.count()
                if points > MAX_GRID_POINTS:
                    raise ValueError(f"the grid has more than {MAX_GRID_POINTS} points")
            # The whole grid once: more trials would only repeat points.
            self.max_trials = min(self.max_trials, points)
        asha = self.early_stop.asha if self.early_stop else None
        if asha is not None and self.metric.startswith("test/"):
            raise ValueError("asha needs a metric recorded every epoch (train/ or val/)")
        known = TRAIN_METRICS if self.metric_split == "train" else EVAL_METRICS
        if self.metric_name not in known:
            raise ValueError(
                f"metric {self.metric}: a trial records {self.metric_split}/ "
                f"{' or '.join(sorted(known))}"
            )
        return self

    @property
    def metric_split(self) -> str:
        return self.metric.partition("/")[0]

    @property
    def metric_name(self) -> str:
        return self.metric.partition("/")[2]


def grid_values(dist: Choice | IntRange) -> list[Scalar]:
    """The values a grid search tries for one distribution."""
    return list(dist.choice) if isinstance(dist, Choice) else list(dist.values())


def path_parts(path: str) -> list[str | int]:
    """'model.layers[2].out_features' -> ['model', 'layers', 2, 'out_features']."""
    parts: list[str | int] = []
    for name, index in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)|\[([0-9]+)\]", path):
        parts.append(name if name else int(index))
    return parts
