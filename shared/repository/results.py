"""Metric points and layer trace rows: idempotent batch writes and bounded reads."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from shared.models import LayerTrace, Metric, RankTrace
from shared.repository.inserts import insert_ignoring_duplicates
from shared.repository.rollups import forget_after
from shared.repository.thinning import thinned_rows


def record_metrics(*, session: Session, job_id: uuid.UUID, rows: Iterable[dict[str, Any]]) -> None:
    """Write metric points {split, name, step, epoch, value} in one batch."""
    batch = [{**row, "job_id": job_id} for row in rows]
    if batch:
        insert_ignoring_duplicates(session, Metric.__table__, batch)  # type: ignore[arg-type]


def record_traces(*, session: Session, job_id: uuid.UUID, rows: Iterable[dict[str, Any]]) -> None:
    """Write layer trace rows in one batch."""
    batch = [{**row, "job_id": job_id} for row in rows]
    if batch:
        insert_ignoring_duplicates(session, LayerTrace.__table__, batch)  # type: ignore[arg-type]


def record_rank_traces(
    *, session: Session, job_id: uuid.UUID, rows: Iterable[dict[str, Any]]
) -> None:
    """Write rank-local trace rows (hooks.per_rank) in one batch."""
    batch = [{**row, "job_id": job_id} for row in rows]
    if batch:
        insert_ignoring_duplicates(session, RankTrace.__table__, batch)  # type: ignore[arg-type]


def delete_rows_after(*, session: Session, job_id: uuid.UUID, step: int) -> None:
    """Metric and trace rows past `step`: a resumed attempt writes those steps again, so
    each step keeps exactly one row of each kind; so are the rollups of those steps."""
    for model in (Metric, LayerTrace, RankTrace):
        session.execute(delete(model).where(model.job_id == job_id, model.step > step))
    forget_after(session=session, job_id=job_id, step=step)


def _step_bounds(column: Any, low: int | None, high: int | None) -> list[Any]:
    """low <= column <= high (either bound may be open), as WHERE terms."""
    terms = []
    if low is not None:
        terms.append(column >= low)
    if high is not None:
        terms.append(column <= high)
    return terms


def list_metrics(
    *,
    session: Session,
    job_id: uuid.UUID,
    name: str | None = None,
    split: str | None = None,
    from_step: int | None = None,
    to_step: int | None = None,
    limit: int | None = None,
    max_points: int | None = None,
) -> list[Metric]:
    """A job's metric points ordered by name, split, step; step bounds are inclusive.
    With `max_points`, each series is thinned in the database first (thinning.py)."""
    where = [Metric.job_id == job_id, *_step_bounds(Metric.step, from_step, to_step)]
    if name:
        where.append(Metric.name == name)
    if split:
        where.append(Metric.split == split)
    if max_points is not None:
        rows = thinned_rows(
            session, model=Metric, job_id=job_id, where=where,
            keys=[Metric.split, Metric.name], value=Metric.value, max_points=max_points,
            only=(split, name) if split and name else None,
        )  # fmt: skip
        rows.sort(key=lambda r: (r.name, r.split, r.step))
        return rows[:limit]
    query = select(Metric).where(*where)
    query = query.order_by(Metric.name, Metric.split, Metric.step).limit(limit)
    return list(session.scalars(query))


def list_traces(
    *,
    session: Session,
    job_id: uuid.UUID,
    layer: str | None = None,
    kind: str | None = None,
    from_step: int | None = None,
    to_step: int | None = None,
    limit: int,
    max_points: int | None = None,
    stat: str = "norm",
) -> list[LayerTrace]:
    """Trace rows ordered by step then layer; step bounds are inclusive. With
    `max_points`, each (layer, kind) series is thinned in the database on `stat`."""
    read = _traces(LayerTrace, job_id, layer, kind, from_step, to_step, limit,
                   thin=(max_points, stat))  # fmt: skip
    return read(session)


def list_rank_traces(
    *,
    session: Session,
    job_id: uuid.UUID,
    rank: int,
    layer: str | None = None,
    kind: str | None = None,
    from_step: int | None = None,
    to_step: int | None = None,
    limit: int,
    max_points: int | None = None,
    stat: str = "norm",
) -> list[RankTrace]:
    """One rank's rank-local trace rows (hooks.per_rank), ordered as list_traces'."""
    read = _traces(RankTrace, job_id, layer, kind, from_step, to_step, limit, rank=rank,
                   thin=(max_points, stat))  # fmt: skip
    return read(session)


def _traces(
    model: Any,
    job_id: uuid.UUID,
    layer: str | None,
    kind: str | None,
    from_step: int | None,
    to_step: int | None,
    limit: int,
    rank: int | None = None,
    thin: tuple[int | None, str] = (None, "norm"),
) -> Callable[[Session], list[Any]]:
    where = [model.job_id == job_id, *_step_bounds(model.step, from_step, to_step)]
    if rank is not None:
        where.append(model.rank == rank)
    glob = layer is not None and any(c in layer for c in "*?")
    if layer and glob:
        where.append(model.layer.like(glob_to_like(layer), escape="\\"))
    elif layer:  # no wildcard: an exact (case-sensitive everywhere) match
        where.append(model.layer == layer)
    if kind:
        where.append(model.kind == kind)
    max_points, stat = thin
    if max_points is not None:
        value = getattr(model, stat)
        # Steps that recorded norms only (hooks.full_every) have no value of other stats.
        having = where if stat == "norm" else [*where, value.is_not(None)]
        return lambda session: sorted(
            thinned_rows(
                session, model=model, job_id=job_id, where=having,
                keys=[model.layer, model.kind], value=value, max_points=max_points,
                only=(layer, kind) if layer and not glob and kind else None,
            ),
            key=lambda r: (r.step, r.kind, r.layer),
        )[:limit]  # fmt: skip
    query = select(model).where(*where)
    query = query.order_by(model.step, model.kind, model.layer).limit(limit)
    return lambda session: list(session.scalars(query))


def glob_to_like(glob: str) -> str:
    """A shell glob (* and ?) as an SQL LIKE pattern, with LIKE's own wildcards escaped."""
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def metric_overview(*, session: Session, job_id: uuid.UUID) -> list[dict[str, Any]]:
    """Per (split, name) series: point count, the last point, and the best point.

    Best is the lowest value for names ending in 'loss' and the highest for names ending
    in 'accuracy' (other series have none). Non-finite values are never best: the bounds
    leave out NaN (greater than every number on PostgreSQL, text on SQLite) and inf.
    """
    where = Metric.job_id == job_id
    groups = session.execute(
        select(Metric.split, Metric.name, func.count(), func.max(Metric.step))
        .where(where)
        .group_by(Metric.split, Metric.name)
        .order_by(Metric.split, Metric.name)
    ).all()
    series = []
    for split, name, count, last_step in groups:
        same = (where, Metric.split == split, Metric.name == name)
        last = session.execute(
            select(Metric.step, Metric.epoch, Metric.value).where(*same, Metric.step == last_step)
        ).first()
        if last is None:
            # Gone since the count (read committed): the job was deleted, or a resumed
            # attempt replaced the rows past its step. The series is left out, not a 500.
            continue
        best = None
        order = {"loss": Metric.value.asc(), "accuracy": Metric.value.desc()}
        kind = next((k for k in order if name.endswith(k)), None)
        if kind is not None:
            best = session.execute(
                select(Metric.step, Metric.epoch, Metric.value)
                .where(*same, Metric.value >= -1e308, Metric.value <= 1e308)
                .order_by(order[kind], Metric.step.asc())
                .limit(1)
            ).first()
        series.append(
            {
                "split": split,
                "name": name,
                "points": int(count),
                "last": dict(last._mapping),
                "best": dict(best._mapping) if best is not None else None,
            }
        )
    return series
