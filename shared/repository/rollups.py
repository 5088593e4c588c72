"""Rollups of long series and retention of raw trace rows.

A series (a metric's split and name, a trace's layer and kind) is summarised per bucket
of steps (models.Rollup): level 0 buckets are BUCKET_STEPS wide, each level up twice as
wide. `roll_up` adds the buckets whose steps are all committed, level by level from the
one below (each pass reads only what is new), and thins raw trace rows older than the
job's `hooks.keep_raw_steps` to the rows that level-0 rollups name, so the first, lowest
and highest point of every bucket (and so every thinned read, thinning.py) stays exact
while the disk holds a few rows per hundred steps.

Why buckets are written only once complete: a rollup is never updated, so a reader never
sees half a bucket and a writer needs no read-modify-write. The writer commits each
table's rows in step order and rolls up only as far as every table it writes has
committed (worker/writer.py), so every step below `through_step` is in.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Double,
    cast,
    delete,
    exists,
    func,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.orm import Session

from shared.models import LayerTrace, Metric, MetricRollup, RollupMark, TraceRollup
from shared.repository.inserts import dialect_insert, insert_ignoring_duplicates

BUCKET_STEPS = 100
# 2^24 x 100 steps covers every int32 step: levels above roll nothing.
MAX_LEVEL = 24


def width(level: int) -> int:
    """Steps per bucket at `level`."""
    return BUCKET_STEPS << level


@dataclass(frozen=True)
class SeriesTable:
    """A table of series and its rollup table."""

    source: Any  # LayerTrace | Metric
    rollup: Any  # TraceRollup | MetricRollup
    keys: tuple[str, ...]  # the columns naming a series, in the rollup key's order
    stats: tuple[str, ...]  # the value columns rolled up

    def key_columns(self, model: Any) -> list[Any]:
        return [getattr(model, key) for key in self.keys]


TRACES = SeriesTable(
    source=LayerTrace,
    rollup=TraceRollup,
    keys=("layer", "kind"),
    stats=("norm", "mean", "std", "min", "max", "zero_frac", "update_ratio"),
)
METRICS = SeriesTable(source=Metric, rollup=MetricRollup, keys=("split", "name"), stats=("value",))
SERIES_TABLES = {LayerTrace: TRACES, Metric: METRICS}


@dataclass(frozen=True)
class RollResult:
    """What one roll_up pass did."""

    rolled_below: int
    pruned_below: int
    rows_pruned: int


def roll_up(
    *, session: Session, job_id: uuid.UUID, through_step: int, keep_raw_steps: int | None = None
) -> RollResult:
    """Roll up every complete bucket below `through_step` (every step before it committed)
    and, with `keep_raw_steps`, thin the raw trace rows older than that many steps."""
    mark = _mark(session, job_id)
    rolled_from, rolled_to = mark.rolled_below, (through_step // BUCKET_STEPS) * BUCKET_STEPS
    if rolled_to > rolled_from:
        for table in (TRACES, METRICS):
            _roll_table(session, table, job_id, rolled_from, rolled_to)
        mark.rolled_below = rolled_to
    pruned = 0
    if keep_raw_steps is not None:
        keep_from = ((through_step - keep_raw_steps) // BUCKET_STEPS) * BUCKET_STEPS
        prune_to = min(mark.rolled_below, keep_from)
        if prune_to > mark.pruned_below:
            pruned = _prune(session, job_id, mark.pruned_below, prune_to)
            mark.pruned_below = prune_to
    session.flush()
    return RollResult(mark.rolled_below, mark.pruned_below, pruned)


def forget_after(*, session: Session, job_id: uuid.UUID, step: int) -> None:
    """Drop the rollups of buckets reaching past `step` (a resumed attempt writes those
    steps again); they are rolled up anew once rewritten."""
    mark = session.get(RollupMark, job_id, with_for_update=_postgres(session))
    if mark is None:
        return
    keep_below = ((step + 1) // BUCKET_STEPS) * BUCKET_STEPS
    if mark.rolled_below <= keep_below:
        return
    for table in (TRACES, METRICS):
        rollup = table.rollup
        for level in range(MAX_LEVEL + 1):
            if width(level) > mark.rolled_below:
                break
            # Bucket b is kept while it ends by keep_below: (b + 1) * width <= keep_below.
            session.execute(
                delete(rollup).where(
                    rollup.job_id == job_id,
                    rollup.level == level,
                    rollup.bucket >= keep_below // width(level),
                )
            )
    mark.pruned_below = min(mark.pruned_below, keep_below)
    mark.rolled_below = keep_below
    session.flush()


def marks(session: Session, job_id: uuid.UUID) -> tuple[int, int]:
    """(rolled_below, pruned_below) of a job; (0, 0) when nothing is rolled up."""
    found = session.execute(
        select(RollupMark.rolled_below, RollupMark.pruned_below).where(RollupMark.job_id == job_id)
    ).first()
    return (found[0], found[1]) if found is not None else (0, 0)


def read_rollups(
    session: Session,
    table: SeriesTable,
    *,
    job_id: uuid.UUID,
    series: tuple[Any, ...],
    stat: str,
    level: int,
    buckets: tuple[int, int],
) -> list[Any]:
    """Rows (first_step, low, low_step, high, high_step) of buckets [from, to) of one series."""
    rollup = table.rollup
    same = [key == part for key, part in zip(table.key_columns(rollup), series, strict=True)]
    query = select(
        rollup.first_step, rollup.low, rollup.low_step, rollup.high, rollup.high_step
    ).where(
        rollup.job_id == job_id,
        *same,
        rollup.stat == stat,
        rollup.level == level,
        rollup.bucket >= buckets[0],
        rollup.bucket < buckets[1],
    )
    return list(session.execute(query))


# -- rolling up ----------------------------------------------------------------------


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _mark(session: Session, job_id: uuid.UUID) -> RollupMark:
    """The job's mark row, locked on PostgreSQL so two rollers of one job take turns."""
    session.execute(
        dialect_insert(session, RollupMark)
        .values(job_id=job_id, rolled_below=0, pruned_below=0)
        .on_conflict_do_nothing()
    )
    mark = session.get(
        RollupMark, job_id, with_for_update=_postgres(session), populate_existing=True
    )
    assert mark is not None
    return mark


def _roll_table(
    session: Session, table: SeriesTable, job_id: uuid.UUID, start: int, end: int
) -> None:
    """Rollups of every level for the buckets completed by the steps [start, end)."""
    _store(session, table, job_id, 0, _level0(session, table, job_id, start, end))
    for level in range(1, MAX_LEVEL + 1):
        first, stop = start // width(level), end // width(level)  # complete: b < stop
        if stop <= first:
            if end < width(level):
                break  # no bucket of this level or above is complete yet
            continue
        _store(session, table, job_id, level, _level_up(session, table, job_id, level, first, stop))


# A bucket's summary of one statistic: (series keys, stat, bucket, count, first step,
# (low, its step), (high, its step)).
Summary = tuple[tuple[Any, ...], str, int, int, int, tuple[float, int], tuple[float, int]]


def _level0(
    session: Session, table: SeriesTable, job_id: uuid.UUID, start: int, end: int
) -> list[Summary]:
    """Every statistic's level-0 summaries of the raw rows of steps [start, end).

    PostgreSQL: one GROUP BY pass for all statistics; min(ARRAY[value, step]) is the
    lowest value with its earliest step (arrays compare element by element, NaN above
    every number) and max(ARRAY[value, -step]) the highest with its earliest step.
    SQLite: a bare column next to a lone min() / max() is the holding row's (per stat).
    """
    src = table.source
    keys = table.key_columns(src)
    bucket = src.step // BUCKET_STEPS
    where = (src.job_id == job_id, src.step >= start, src.step < end)
    if not _postgres(session):
        return [
            found
            for stat in table.stats
            for found in _sqlite_summaries(
                session, keys, stat, bucket, getattr(src, stat), src.step,
                getattr(src, stat), src.step, count=func.count(getattr(src, stat)), where=where,
            )
        ]  # fmt: skip
    step = cast(src.step, Double)
    columns: list[Any] = [*keys, bucket]
    for stat in table.stats:
        value = getattr(src, stat)
        has = value.is_not(None)
        columns += [
            func.count(value),
            func.min(src.step).filter(has),
            func.min(array((value, step))).filter(has),
            func.max(array((value, -step))).filter(has),
        ]
    found: list[Summary] = []
    width_keys = len(keys)
    for row in session.execute(select(*columns).where(*where).group_by(*keys, bucket)):
        series, number = tuple(row[:width_keys]), row[width_keys]
        for i, stat in enumerate(table.stats):
            count, first, low, high = row[width_keys + 1 + 4 * i : width_keys + 5 + 4 * i]
            if count:
                found.append((series, stat, number, count, first, _pair(low, 1), _pair(high, -1)))
    return found


def _level_up(
    session: Session, table: SeriesTable, job_id: uuid.UUID, level: int, first: int, stop: int
) -> list[Summary]:
    """The summaries of buckets [first, stop) of `level` from their halves one level down."""
    below = table.rollup
    keys = [*table.key_columns(below), below.stat]
    bucket = below.bucket // 2
    where = (below.job_id == job_id, below.level == level - 1, below.bucket >= 2 * first,
             below.bucket < 2 * stop)  # fmt: skip
    if not _postgres(session):
        return [
            (series[:-1], series[-1], number, count, first_step, low, high)
            for series, _, number, count, first_step, low, high in _sqlite_summaries(
                session, keys, "", bucket, below.low, below.low_step, below.high,
                below.high_step, count=func.sum(below.count), where=where,
                first=below.first_step,
            )
        ]  # fmt: skip
    query = (
        select(
            *keys,
            bucket,
            func.sum(below.count),
            func.min(below.first_step),
            func.min(array((below.low, cast(below.low_step, Double)))),
            func.max(array((below.high, -cast(below.high_step, Double)))),
        )
        .where(*where)
        .group_by(*keys, bucket)
    )
    return [
        (tuple(row[: len(keys) - 1]), row[len(keys) - 1], row[len(keys)], int(count), first_step,
         _pair(low, 1), _pair(high, -1))
        for row in session.execute(query)
        for count, first_step, low, high in [row[len(keys) + 1 :]]
    ]  # fmt: skip


def _pair(found: list[float], sign: int) -> tuple[float, int]:
    """(value, step) from an ARRAY[value, sign * step]."""
    return found[0], int(found[1]) * sign


def _sqlite_summaries(
    session: Session,
    keys: list[Any],
    stat: str,
    bucket: Any,
    low: Any,
    low_step: Any,
    high: Any,
    high_step: Any,
    *,
    count: Any,
    where: tuple[Any, ...],
    first: Any = None,
) -> list[Summary]:
    has = (*where, low.is_not(None))
    first = first if first is not None else low_step
    group = (*keys, bucket)
    n = len(group)
    per_bucket = select(*group, count, func.min(first)).where(*has).group_by(*group)
    counts = {tuple(row[:n]): row[n:] for row in session.execute(per_bucket)}
    lows = {tuple(row[:n]): (row[n], row[n + 1]) for row in session.execute(
        select(*group, func.min(low), low_step).where(*has).group_by(*group))}  # fmt: skip
    highs = {tuple(row[:n]): (row[n], row[n + 1]) for row in session.execute(
        select(*group, func.max(high), high_step).where(*has).group_by(*group))}  # fmt: skip
    return [
        (key[:-1], stat, key[-1], int(total), first_step, lows[key], highs[key])
        for key, (total, first_step) in counts.items()
    ]


def _store(session: Session, table: SeriesTable, job_id: uuid.UUID, level: int,
           found: list[Summary]) -> None:  # fmt: skip
    rows = [
        {"job_id": job_id, **dict(zip(table.keys, series, strict=True)), "stat": stat,
         "level": level, "bucket": number, "count": count, "first_step": first,
         "low": low[0], "low_step": low[1], "high": high[0], "high_step": high[1]}
        for series, stat, number, count, first, low, high in found
    ]  # fmt: skip
    if rows:
        insert_ignoring_duplicates(session, table.rollup.__table__, rows)


# -- retention -------------------------------------------------------------------------


def _prune(session: Session, job_id: uuid.UUID, start: int, end: int) -> int:
    """Delete the raw trace rows of steps [start, end) that no level-0 rollup names."""
    trace, rollup = LayerTrace, TraceRollup
    named = exists().where(
        rollup.job_id == trace.job_id,
        rollup.layer == trace.layer,
        rollup.kind == trace.kind,
        rollup.level == 0,
        rollup.bucket == trace.step // BUCKET_STEPS,
        or_(rollup.first_step == trace.step, rollup.low_step == trace.step,
            rollup.high_step == trace.step),
    )  # fmt: skip
    result = session.execute(
        delete(trace.__table__).where(  # type: ignore[arg-type]
            trace.job_id == job_id, trace.step >= start, trace.step < end, ~named
        )
    )
    return max(result.rowcount or 0, 0)  # type: ignore[attr-defined]
