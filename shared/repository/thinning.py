"""Long series thinned in the database, never cut by a row limit first.

Every series (a metric's name and split, a trace's layer and kind) is split into
`max_points` equal buckets of steps over its own first to last step; each bucket keeps
its first point and the points holding its lowest and highest value (the earliest on a
tie), and the series keeps its last point: a spike stays visible however far a series is
thinned, the true global minimum and maximum and the final value are always there, and
at most 3 x `max_points` + 1 rows per series leave the database. A NaN counts as the
highest value (PostgreSQL orders it above every number; SQLite stores it as text, which
it orders above numbers too), so a divergence shows.

Per series: its first and last step (an index lookup); one GROUP BY pass over its rows
for each bucket's first step and extremes, and one for the earliest step holding each
extreme (SQLite returns the row of a lone min() / max(), so there it is one pass per
extreme); then the kept rows by key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, cast, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session


def thinned_rows(
    session: Session,
    *,
    model: Any,
    where: Sequence[ColumnElement[bool]],
    keys: Sequence[InstrumentedAttribute[Any]],
    value: InstrumentedAttribute[Any],
    max_points: int,
) -> list[Any]:
    """The rows of `model` matching `where` that the thinning keeps, series by series."""
    step = model.step
    bounds = session.execute(
        select(*keys, func.min(step), func.max(step)).where(*where).group_by(*keys)
    ).all()
    rows: list[Any] = []
    for *series, first, last in bounds:
        in_series = [*where, *(key == part for key, part in zip(keys, series, strict=True))]
        bucket = (cast(step - first, BigInteger) * max_points) // (last - first + 1)
        steps = {last, *_bucket_steps(session, in_series, step, value, bucket)}
        found = select(model).where(*in_series, step.in_(sorted(steps)))
        rows.extend(session.scalars(found))
    return rows


def _key(value: float) -> float | str:
    # NaN equals nothing, itself included: key it by name.
    return "NaN" if value != value else value


def _bucket_steps(
    session: Session, where: list[Any], step: Any, value: Any, bucket: Any
) -> set[int]:
    """Every bucket's first step and the steps of its lowest and highest value."""
    if session.get_bind().dialect.name == "postgresql":
        # Two plain passes beat one that builds an ARRAY per row (measured): each bucket's
        # first step and extremes, then the earliest step holding each extreme.
        per_bucket = select(bucket, func.min(step), func.min(value), func.max(value))
        found: set[int] = set()
        extremes: set[tuple[int, float | str]] = set()
        wanted: dict[float | str, float] = {}
        for number, first, low, high in session.execute(per_bucket.where(*where).group_by(bucket)):
            found.add(first)
            for extreme in (low, high) if low is not None else ():  # all NULL: none
                extremes.add((number, _key(extreme)))
                wanted[_key(extreme)] = extreme
        if wanted:
            holders = select(bucket, value, func.min(step)).where(*where, value.in_(list(wanted)))
            for number, held, at in session.execute(holders.group_by(bucket, value)):
                if (number, _key(held)) in extremes:
                    found.add(at)
        return found
    # SQLite: the bare `step` is that of the row holding the lone min() / max().
    found = set(session.scalars(select(func.min(step)).where(*where).group_by(bucket)))
    for extreme in (func.min(value), func.max(value)):
        holder = select(extreme, step).where(*where, value.is_not(None)).group_by(bucket)
        found.update(row_step for _, row_step in session.execute(holder))
    return found
