"""Spec builders for model tests: a layer list on small synthetic data, and its SpecError."""

from __future__ import annotations

from typing import Any

import pytest

from shared.errors import SpecError
from shared.net.dryrun import dry_run
from shared.spec import JobSpec

SYNTHETIC_10 = {"dataset": "synthetic", "input_shape": [10], "num_classes": 3}


def job(layers: list[dict[str, Any]], data: dict[str, Any] | None = None) -> JobSpec:
    return JobSpec.model_validate({"model": {"layers": layers}, "data": data or SYNTHETIC_10})


def spec_error(layers: list[dict[str, Any]], data: dict[str, Any] | None = None) -> SpecError:
    with pytest.raises(SpecError) as info:
        dry_run(job(layers, data))
    return info.value


def linear(i: int, o: int, name: str | None = None) -> dict[str, Any]:
    return {"type": "Linear", "in_features": i, "out_features": o, "name": name}
