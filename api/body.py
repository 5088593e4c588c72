"""How the API reads a request body: strict UTF-8 JSON, an object, storable text, and a
413 for any body over the limit. Spectree validates what this returns against the
route's model (`api.contract`); the raw object stays at hand for idempotency keys."""

from __future__ import annotations

import json
from typing import Any

import pydantic_core
from flask import Request, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from api.text_guard import check_json
from shared.errors import SpecError

_PARSED = "trainyard.json"  # where a request keeps its parsed body (environ: per request)
# Deeper bodies are refused: no request needs more (a spec's layer tree or a batch of
# images is a few levels), and one nested near the parser's own limit would fail every
# later encoding of it (idempotency digest, JSONB) with a RecursionError.
MAX_DEPTH = 64


class ApiRequest(Request):
    """Flask's request, whose `get_json` is the strict reader below whatever the
    Content-Type says (`curl -d` sends a form type) and whatever `silent` asks."""

    def get_json(
        self, force: bool = False, silent: bool = False, cache: bool = True
    ) -> dict[str, Any] | None:
        return json_body()


def _parse(text: str) -> Any:
    """pydantic_core's parser (0.11 ms for one 1x32x32 prediction input where json.loads
    takes 0.60 ms, measured); what it refuses goes to json.loads, so every refusal and
    its message stay as they were (an escaped lone surrogate parses there, and the text
    guard then names where it was)."""
    try:
        return pydantic_core.from_json(text)
    except ValueError:
        return json.loads(text)


def json_body() -> dict[str, Any] | None:
    """The body as a dict, None when there is none; a 400 (or 413) otherwise."""
    if _PARSED in request.environ:
        parsed: dict[str, Any] | None = request.environ[_PARSED]
        return parsed
    try:
        # UTF-8 only, strictly (json.loads on bytes would also take UTF-16 and let a raw
        # surrogate through).
        text = _body_bytes().decode("utf-8")
        body = _parse(text) if text.strip() else None
    except UnicodeDecodeError:
        raise SpecError(
            "the request body must be UTF-8 encoded JSON",
            details=[{"loc": "body", "msg": "not UTF-8"}],
        ) from None
    except (ValueError, RecursionError):  # not JSON; or nested deeper than the parser goes
        raise _not_an_object() from None
    if body is not None and not isinstance(body, dict):
        raise _not_an_object()
    if body is not None and _deeper_than(MAX_DEPTH, body, text):
        raise SpecError(
            f"the request body is nested more than {MAX_DEPTH} levels deep",
            details=[{"loc": "body", "msg": "nested too deeply"}],
        )
    if body is not None:
        check_json(body, raw=text)  # NUL / lone surrogates: 400 here, not a failed INSERT
    request.environ[_PARSED] = body
    return body


def _deeper_than(limit: int, body: dict[str, Any], text: str) -> bool:
    """Whether containers nest more than `limit` deep; iteratively, and only walked when
    the text has that many brackets at all (two C-speed counts for most bodies)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def raw_body() -> dict[str, Any]:
    """The body as sent (after the checks above); {} when there is none."""
    return json_body() or {}


def _not_an_object() -> SpecError:
    return SpecError(
        "the request body must be a JSON object (see /api/v1/docs for each route's)",
        details=[{"loc": "body", "msg": "not a JSON object"}],
    )


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
