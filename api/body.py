"""The JSON object a POST carries, or a 400 that shows what one looks like."""

from __future__ import annotations

import json
from typing import Any

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from api.text_guard import check_json
from shared.errors import SpecError


def json_object(example: str) -> dict[str, Any]:
    """The request body as a dict; `example` shows the caller the expected shape."""
    try:
        # UTF-8 only, strictly (json.loads on bytes would also take UTF-16 and let a raw
        # surrogate through); read as JSON whatever the Content-Type says (curl -d).
        text = _body_bytes().decode("utf-8")
        body = json.loads(text) if text else None
    except UnicodeDecodeError:
        raise SpecError(
            "the request body must be UTF-8 encoded JSON",
            details=[{"loc": "body", "msg": "not UTF-8"}],
        ) from None
    except (ValueError, RecursionError):  # not JSON; or nested deeper than the parser goes
        text, body = "", None
    if not isinstance(body, dict):
        raise SpecError(
            f"the request body must be a JSON object such as {example}",
            details=[{"loc": "body", "msg": "not a JSON object"}],
        )
    check_json(body, raw=text)  # NUL / lone surrogates: 400 here, not a failed INSERT later
    return body


def _body_bytes() -> bytes:
    """The body, or RequestEntityTooLarge (413) when it is over the limit, however it is
    sent: a chunked body has no Content-Length, and werkzeug then stops reading at the
    limit without saying so (a 400 "not a JSON object" would blame the client's JSON)."""
    data = request.get_data(cache=True)
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    at_limit = request.content_length is None and limit is not None and len(data) >= limit
    if at_limit and request.environ["wsgi.input"].read(1):  # there was more than the limit
        raise RequestEntityTooLarge()
    return data


def refuse_unknown(body: dict[str, Any], allowed: set[str], shape: str) -> None:
    """A 400 naming every field of `body` outside `allowed`; `shape` says what is expected."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise SpecError(
            f"unknown field {unknown[0]!r}; {shape}",
            details=[{"loc": name, "msg": "unknown field"} for name in unknown],
        )
