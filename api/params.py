"""Query-string parsing that answers 400 naming the parameter, never a silent default or a 500."""

from __future__ import annotations

from flask import request

from shared.errors import BadParameter

INT32_MAX = 2**31 - 1


def int_arg(name: str, *, default: int | None, lo: int = 0, hi: int = INT32_MAX) -> int | None:
    """An integer query parameter within [lo, hi]; `default` when absent or empty."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParameter(
            f"{name} must be an integer, got {raw[:40]!r}", details=[{"loc": name}]
        ) from None
    if not lo <= value <= hi:
        raise BadParameter(f"{name} must be between {lo} and {hi}", details=[{"loc": name}])
    return value


def choice_arg(name: str, choices: tuple[str, ...]) -> str | None:
    """A query parameter restricted to `choices` (None when absent)."""
    raw = request.args.get(name) or None
    if raw is not None and raw not in choices:
        raise BadParameter(f"{name} must be one of {list(choices)}", details=[{"loc": name}])
    return raw
