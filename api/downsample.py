"""Thinning long series for plots: every bucket of steps keeps its first, lowest and highest
point, so spikes stay visible however far a series is thinned."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def downsample(
    rows: Sequence[T],
    *,
    max_points: int,
    step: Callable[[T], int],
    series: Callable[[T], object],
    value: Callable[[T], float | None],
) -> list[T]:
    """At most about 3 x max_points rows per series, in the input order."""
    by_series: dict[object, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_series[series(row)].append(i)
    keep: set[int] = set()
    for indices in by_series.values():
        if len(indices) <= max_points:
            keep.update(indices)
            continue
        first, last = step(rows[indices[0]]), step(rows[indices[-1]])
        width = (last - first + 1) / max_points
        buckets: dict[int, list[int]] = defaultdict(list)
        for i in indices:
            buckets[int((step(rows[i]) - first) / width)].append(i)
        for members in buckets.values():
            keep.add(members[0])
            # NaN compares false with everything: keep such points outright.
            keep.update(i for i in members if _nan(value(rows[i])))
            scored = [i for i in members if value(rows[i]) is not None and not _nan(value(rows[i]))]
            if scored:
                keep.add(min(scored, key=lambda i: value(rows[i]) or 0.0))
                keep.add(max(scored, key=lambda i: value(rows[i]) or 0.0))
    return [rows[i] for i in sorted(keep)]


def _nan(value: float | None) -> bool:
    return value is not None and value != value
