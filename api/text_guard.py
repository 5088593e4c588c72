"""Text no database can store is refused before any route runs, in one place.

PostgreSQL refuses a NUL character in text and JSONB, and a lone UTF-16 surrogate
(`"\\ud800"` in JSON) cannot even be encoded as UTF-8: either would fail an INSERT or a
query deep inside a route and turn a client's mistake into a 500. Every query-string
parameter, every header the API reads and every string (key or value) in a JSON body is
checked here instead, and refused with a 400 naming where it was.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, request

from shared.errors import TrainyardError

# Headers whose values the API stores or compares in the database.
STORED_HEADERS = ("Idempotency-Key",)


class UnstorableText(TrainyardError):
    """A NUL or a lone surrogate in text the API would store or query with."""

    code = "invalid_text"


def problem_in(text: str) -> str | None:
    """Why `text` cannot be stored, or None."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")  # C speed; a lone surrogate is the only way this fails
    except UnicodeEncodeError:
        return "contains a lone UTF-16 surrogate (not valid Unicode text)"
    return None


def refuse(loc: str, text: str) -> None:
    """UnstorableText naming `loc` if `text` cannot be stored."""
    problem = problem_in(text)
    if problem is not None:
        raise UnstorableText(f"{loc} {problem}", details=[{"loc": loc, "msg": problem}])


# In JSON text a NUL or a surrogate can only be written as an escape (raw control
# characters are not allowed in strings, raw surrogates are not UTF-8).
_SUSPECT = re.compile(r"\\u(?:0000|[dD][89abcdefABCDEF])")


def check_json(value: Any, loc: str = "body", raw: str | None = None) -> None:
    """Every string in a parsed JSON value, keys included (iteratively: no depth limit).
    With the `raw` JSON text (strict UTF-8: no raw surrogate can be in it), a body
    without a suspect escape is not walked at all: a batch of numbers costs one regex
    scan, not a Python step per number."""
    if raw is not None and not _SUSPECT.search(raw):
        return
    stack = [(loc, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            refuse(where, item)
        elif isinstance(item, dict):
            for key, child in item.items():
                refuse(f"{where} key", key)
                stack.append((f"{where}.{key}", child))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", child) for i, child in enumerate(item))


def install(app: Flask) -> None:
    """Check the path, the query string and the stored headers of every request."""

    @app.before_request
    def _query_and_headers() -> None:
        refuse("path", request.path)  # a NUL in a URL id would reach the audit log
        for name, value in request.args.items(multi=True):
            refuse("query parameter name", name)
            refuse(f"query.{name}", value)
        for header in STORED_HEADERS:
            stored = request.headers.get(header)
            if stored is not None:
                refuse(f"header {header}", stored)
