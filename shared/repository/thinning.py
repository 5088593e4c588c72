"""Long series thinned in the database, never cut by a row limit first.

Every series (a metric's name and split, a trace's layer and kind) is split into
`max_points` equal buckets of steps over its own first to last step; each bucket keeps
its first point and the points holding its lowest and highest value (the earliest on a
tie), and the series keeps its last point: a spike stays visible however far a series is
thinned, the true global minimum and maximum and the final value are always there, and
at most 3 x `max_points` + 1 rows per series leave the database. A NaN counts as the
highest value (PostgreSQL orders it above every number; SQLite stores it as text, which
it orders above numbers too), so a divergence shows.

Per series: its first and last step (an index lookup), one GROUP BY pass over its rows
that finds each bucket's first, lowest and highest step at once (on PostgreSQL by the
least and greatest ARRAY[value, step]; SQLite returns the row of a lone min() / max(), so
there it is three passes), then the kept rows by key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Float, cast, func, select
from sqlalchemy.dialects.postgresql import ARRAY, array
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


def _bucket_steps(
    session: Session, where: list[Any], step: Any, value: Any, bucket: Any
) -> set[int]:
    """Every bucket's first step and the steps of its lowest and highest value."""
    if session.get_bind().dialect.name == "postgresql":
        pair = ARRAY(Float)
        lowest = func.min(array([value, cast(step, Float)]), type_=pair)[2]
        highest = func.max(array([value, -cast(step, Float)]), type_=pair)[2]
        query = select(func.min(step), lowest, highest).where(*where).group_by(bucket)
        found: set[int] = set()
        for first, low, high in session.execute(query):
            found.add(first)
            if low is not None:  # a bucket whose values are all NULL has no extremes
                found.update((int(low), -int(high)))
        return found
    # SQLite: the bare `step` is that of the row holding the lone min() / max().
    found = set(session.scalars(select(func.min(step)).where(*where).group_by(bucket)))
    for extreme in (func.min(value), func.max(value)):
        holder = select(extreme, step).where(*where, value.is_not(None)).group_by(bucket)
        found.update(row_step for _, row_step in session.execute(holder))
    return found
