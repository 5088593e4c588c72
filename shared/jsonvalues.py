"""Floats that JSON (and PostgreSQL's JSONB) can carry: NaN and infinities become strings."""

from __future__ import annotations

import math
from typing import Any


def json_float(value: float) -> float | str:
    """`value`, or "NaN" / "Infinity" / "-Infinity" where JSON has no token for it."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def json_safe_object(value: dict[str, Any]) -> dict[str, Any]:
    """json_safe of a JSON object (a dict stays a dict)."""
    safe: dict[str, Any] = json_safe(value)
    return safe


def json_safe(value: Any) -> Any:
    """`value` with every float inside dicts and lists passed through json_float."""
    if isinstance(value, float):
        return json_float(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
