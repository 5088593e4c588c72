"""The JSON object a POST carries, or a 400 that shows what one looks like."""

from __future__ import annotations

from typing import Any

from flask import request

from shared.errors import SpecError


def json_object(example: str) -> dict[str, Any]:
    """The request body as a dict; `example` shows the caller the expected shape."""
    try:
        # force: a JSON body sent without Content-Type (curl -d) is still read as JSON.
        body = request.get_json(force=True, silent=True)
    except RecursionError:
        body = None  # nested deeper than the JSON parser goes: not a body anyone meant
    if not isinstance(body, dict):
        raise SpecError(
            f"the request body must be a JSON object such as {example}",
            details=[{"loc": "body", "msg": "not a JSON object"}],
        )
    return body


def refuse_unknown(body: dict[str, Any], allowed: set[str], shape: str) -> None:
    """A 400 naming every field of `body` outside `allowed`; `shape` says what is expected."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise SpecError(
            f"unknown field {unknown[0]!r}; {shape}",
            details=[{"loc": name, "msg": "unknown field"} for name in unknown],
        )
