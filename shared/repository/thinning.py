"""Long series thinned in the database, never cut by a row limit first.

Every series (a metric's name and split, a trace's layer and kind) is split into
`max_points` equal buckets of steps over its own first to last step; each bucket keeps
its first point and the points holding its lowest and highest value (the earliest on a
tie), and the series keeps its last point: a spike stays visible however far a series is
thinned, the true global minimum and maximum and the final value are always there, and
at most 3 x `max_points` + 1 rows per series leave the database. A NaN counts as the
highest value (PostgreSQL orders it above every number; SQLite stores it as text, which
it orders above numbers too), so a divergence shows.

Per series (found by a skip scan of the key index, one lookup per series): its first and
last step (index lookups); then the kept steps, and the kept rows by key. Where the job's
rollups (rollups.py) cover the series at a bucket width of at most one thinning bucket,
the steps come from those few rollup rows, and raw rows are read only at the series'
edges that no complete rollup bucket covers. Otherwise: one GROUP BY pass over its rows
for each bucket's first step and extremes, and one for the earliest step holding each
extreme (SQLite returns the row of a lone min() / max(), so there it is one pass per
extreme). Thinning from rollups is exact up to which point of a bucket straddling two
thinning buckets is kept; the global extremes, first and last point always are. Where
retention (hooks.keep_raw_steps) thinned the raw rows, the level-0 rollups are read even
for thinning buckets narrower than 100 steps: such a read shows the pruned range at
100-step resolution.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, cast, func, or_, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from shared.repository.rollups import (
    BUCKET_STEPS,
    MAX_LEVEL,
    SERIES_TABLES,
    marks,
    read_rollups,
    width,
)

FIRST, LOW, HIGH = "first", "low", "high"
# (thinning bucket, role, step, value): a point some bucket may keep
Candidate = tuple[int, str, int, Any]


def thinned_rows(
    session: Session,
    *,
    model: Any,
    job_id: uuid.UUID,
    where: Sequence[ColumnElement[bool]],
    keys: Sequence[InstrumentedAttribute[Any]],
    value: InstrumentedAttribute[Any],
    max_points: int,
    only: tuple[Any, ...] | None = None,
) -> list[Any]:
    """The rows of `model` matching `where` that the thinning keeps, series by series.
    `keys` name a series, in the order of an index that leads with job_id; `only`: the
    one series `where` selects, when the caller knows it (no search for others)."""
    step = model.step
    table = SERIES_TABLES.get(model)
    rolled, pruned = marks(session, job_id) if table and value.key in table.stats else (0, 0)
    rows: list[Any] = []
    for series in [only] if only is not None else _series(session, where, keys):
        in_series = [*where, *(key == part for key, part in zip(keys, series, strict=True))]
        first = session.scalar(select(func.min(step)).where(*in_series))
        last = session.scalar(select(func.max(step)).where(*in_series))
        if first is None or last is None:
            continue
        span = last - first + 1
        bucket = (cast(step - first, BigInteger) * max_points) // span
        level = _level(span, max_points) if rolled > first else None
        if level is None and pruned > first:
            # Retention kept only the rows the level-0 rollups name: read those rollups
            # even for buckets narrower than theirs (100 steps), not the thinned rows.
            level = 0
        w = width(level) if level is not None else 0
        # The complete rollup buckets inside [first, last]: [covered[0], covered[1]).
        covered = (-(-first // w), min(rolled // w, (last + 1) // w)) if w else (0, 0)
        if covered[1] <= covered[0]:
            candidates = _exact(session, in_series, step, value, bucket)
        else:
            assert level is not None
            edges = [*in_series, or_(step < covered[0] * w, step >= covered[1] * w)]
            candidates = _exact(session, edges, step, value, bucket)
            assert table is not None
            summaries = read_rollups(
                session, table, job_id=job_id, series=tuple(series), stat=value.key,
                level=level, buckets=covered,
            )  # fmt: skip
            candidates.extend(_from_rollups(summaries, first, span, max_points))
        steps = {last, *_kept(candidates)}
        found = select(model).where(*in_series, step.in_(sorted(steps)))
        rows.extend(session.scalars(found))
    return rows


def _series(
    session: Session, where: Sequence[ColumnElement[bool]], keys: Sequence[Any]
) -> list[tuple[Any, ...]]:
    """The distinct series matching `where`, by a skip scan: one index probe per series
    instead of a GROUP BY over every row."""
    found: list[tuple[Any, ...]] = []
    while True:
        query = select(*keys).where(*where)
        if found:
            query = query.where(tuple_(*keys) > tuple_(*found[-1]))
        row = session.execute(query.order_by(*keys).limit(1)).first()
        if row is None:
            return found
        found.append(tuple(row))


def _level(span: int, max_points: int) -> int | None:
    """The coarsest rollup level whose buckets are at most one thinning bucket wide."""
    if BUCKET_STEPS * max_points > span:
        return None
    return min(int(math.log2(span / (BUCKET_STEPS * max_points))), MAX_LEVEL)


def _from_rollups(
    summaries: Iterable[Any], first: int, span: int, max_points: int
) -> list[Candidate]:
    def bucket(at: int) -> int:
        return ((at - first) * max_points) // span

    found: list[Candidate] = []
    for first_step, low, low_step, high, high_step in summaries:
        found.append((bucket(first_step), FIRST, first_step, None))
        found.append((bucket(low_step), LOW, low_step, low))
        found.append((bucket(high_step), HIGH, high_step, high))
    return found


def _kept(candidates: Iterable[Candidate]) -> set[int]:
    """Each bucket's first step and the earliest steps of its lowest and highest value
    (NaN above every number)."""
    best: dict[tuple[int, str], tuple[Any, int]] = {}
    for number, role, at, value in candidates:
        if role == FIRST:
            rank: Any = at
        elif value is None:
            continue
        elif value != value:  # NaN: the highest, never the lowest
            rank = (1, 0.0, at) if role == LOW else (0, 0.0, at)
        else:
            rank = (0, value, at) if role == LOW else (1, -value, at)
        held = best.get((number, role))
        if held is None or rank < held[0]:
            best[(number, role)] = (rank, at)
    return {at for _, at in best.values()}


def _key(value: float) -> float | str:
    # NaN equals nothing, itself included: key it by name.
    return "NaN" if value != value else value


def _exact(
    session: Session, where: list[Any], step: Any, value: Any, bucket: Any
) -> list[Candidate]:
    """Every bucket's first step and the steps of its lowest and highest value, from the
    raw rows."""
    found: list[Candidate] = []
    if session.get_bind().dialect.name == "postgresql":
        # Two plain passes beat one that builds an ARRAY per row (measured): each bucket's
        # first step and extremes, then the earliest step holding each extreme.
        per_bucket = select(bucket, func.min(step), func.min(value), func.max(value))
        roles: dict[tuple[int, float | str], set[str]] = {}
        wanted: dict[float | str, float] = {}
        for number, first, low, high in session.execute(per_bucket.where(*where).group_by(bucket)):
            found.append((number, FIRST, first, None))
            if low is None:  # all NULL: no extremes
                continue
            for role, extreme in ((LOW, low), (HIGH, high)):
                roles.setdefault((number, _key(extreme)), set()).add(role)
                wanted[_key(extreme)] = extreme
        if wanted:
            holders = select(bucket, value, func.min(step)).where(*where, value.in_(list(wanted)))
            for number, held, at in session.execute(holders.group_by(bucket, value)):
                for role in roles.get((number, _key(held)), ()):
                    found.append((number, role, at, held))
        return found
    # SQLite: the bare `step` is that of the row holding the lone min() / max().
    firsts = select(bucket, func.min(step)).where(*where).group_by(bucket)
    found.extend((number, FIRST, first, None) for number, first in session.execute(firsts))
    for role, extreme in ((LOW, func.min(value)), (HIGH, func.max(value))):
        holder = select(bucket, extreme, step).where(*where, value.is_not(None)).group_by(bucket)
        found.extend((number, role, at, held) for number, held, at in session.execute(holder))
    return found
