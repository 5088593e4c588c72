"""The schemathesis command, with one workaround for an interpreter bug.

Hypothesis names a filter's lambda by parsing the source file around it; on Python 3.11
that `ast.parse` of schemathesis's own coverage module can fail with "AST constructor
recursion depth mismatch" (a SystemError from CPython's AST builder, fixed in later
releases), which schemathesis reports as a runtime error of the operation it was
generating for. Only the lambda's printed name depends on that parse: here it falls back
to Hypothesis's own "unknown" description, and every case is generated and checked as
before.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from hypothesis.internal import lambda_sources
from schemathesis.cli import schemathesis

_describe: Callable[[Any], str] = lambda_sources._lambda_description


def _described(f: Any) -> str:
    try:
        return _describe(f)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources._lambda_description = _described

if __name__ == "__main__":
    sys.exit(schemathesis())
