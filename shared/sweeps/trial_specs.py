"""Spec paths: where a sweep's parameters go in the base spec, checked before any trial."""

from __future__ import annotations

import copy
from typing import Any

from shared.errors import SpecError
from shared.spec import JobSpec
from shared.spec.sweep import Scalar, SweepSpec, path_parts


def _parent(spec: dict[str, Any], path: str) -> tuple[Any, str | int]:
    """The container that holds the path's last part, and that part; SpecError naming
    the path when the base spec has no such field."""
    parts = path_parts(path)
    node: Any = spec
    walked = ""
    for part in parts[:-1]:
        node = _step(node, part, path, walked)
        walked += f"[{part}]" if isinstance(part, int) else (f".{part}" if walked else part)
    last = parts[-1]
    _step(node, last, path, walked)  # the field itself must exist too
    return node, last


def _step(node: Any, part: str | int, path: str, walked: str) -> Any:
    if isinstance(part, int):
        if isinstance(node, list) and 0 <= part < len(node):
            return node[part]
    elif isinstance(node, dict) and part in node:
        return node[part]
    where = walked or "the spec"
    raise SpecError(
        f"space.{path}: the base spec has no {part!r} under {where}",
        details=[{"loc": f"space.{path}", "msg": f"no such field in the base spec ({where})"}],
    )


def check_paths(sweep: SweepSpec, base: dict[str, Any]) -> None:
    """Every path of the space names a field of the base spec (defaults included)."""
    for path in sweep.space:
        _parent(base, path)


def check_metric(sweep: SweepSpec, base: JobSpec) -> None:
    """The sweep's metric is one every trial records: a validation split for val/, a
    classification task for accuracy."""
    problem = None
    if sweep.metric_split == "val" and base.data.val_fraction == 0.0:
        problem = "the base spec has no validation split (data.val_fraction is 0)"
    elif sweep.metric_name == "accuracy" and base.data.task != "classification":
        problem = "accuracy is recorded for classification tasks only"
    if problem is not None:
        raise SpecError(
            f"metric {sweep.metric}: {problem}", details=[{"loc": "metric", "msg": problem}]
        )


def trial_spec(sweep: SweepSpec, base: dict[str, Any], params: dict[str, Scalar]) -> dict[str, Any]:
    """The base spec with one trial's parameters in place, and the sweep's gradient rule
    as its hooks.alerts (with stop)."""
    spec = copy.deepcopy(base)
    for path, value in params.items():
        node, last = _parent(spec, path)
        node[last] = value
    gradient = sweep.early_stop.gradient if sweep.early_stop else None
    if gradient is not None:
        hooks = spec.setdefault("hooks", {})
        # The base spec's own alerts stay; the sweep's thresholds replace the same ones.
        rules = gradient.model_dump(exclude_none=True)
        hooks["alerts"] = {**(hooks.get("alerts") or {}), **rules, "stop": True}
    return spec


def base_with_defaults(spec: JobSpec) -> dict[str, Any]:
    """The checked base spec as JSON with every default spelled out: paths into defaults
    (train.optimizer.lr where the user wrote no optimizer) exist there."""
    return spec.model_dump(mode="json")
