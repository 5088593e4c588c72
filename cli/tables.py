"""Plain-text output of the client commands: aligned tables, numbers, CSV."""

from __future__ import annotations

import csv
import sys
from typing import Any


def table(rows: list[list[Any]], header: list[str]) -> str:
    """Left-aligned text columns."""
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def number(value: Any) -> str:
    """A float to 6 significant digits, None as "-", anything else as str()."""
    return f"{value:.6g}" if isinstance(value, float) else ("-" if value is None else str(value))


def write_csv(header: list[str], rows: list[list[Any]]) -> None:
    """CSV with a header line on stdout."""
    writer = csv.writer(sys.stdout)
    writer.writerow(header)
    writer.writerows(rows)
