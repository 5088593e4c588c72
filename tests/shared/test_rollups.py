"""Rollups and retention, on PostgreSQL and on the embedded SQLite default: a thinned read
from rollups keeps what a read of the raw rows keeps, retention removes raw rows without
changing what a thinned read shows, and a resumed attempt's rewritten steps are rolled up
anew."""

from __future__ import annotations

import math
import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.db import session_scope
from shared.models import LayerTrace, MetricRollup, RollupMark, TraceRollup
from shared.repository.rollups import BUCKET_STEPS, width

STATS = ("norm", "mean", "zero_frac")


def _value(step: int, phase: float) -> float:
    return 2.0 + math.sin(step / 90 + phase) + (step % 7) * 1e-3


def _job(sessions: sessionmaker[Session], steps: range) -> uuid.UUID:
    """Metrics and two layers' traces with three statistics (mean every 10th step only,
    as hooks.full_every records it), one spike, one dip and one NaN."""
    with session_scope(sessions) as session:
        job = repository.create_job(session=session, owner="o", kind="train", spec={}, queue="t")
        job_id = job.id
    _write(sessions, job_id, steps)
    return job_id


def _write(
    sessions: sessionmaker[Session], job_id: uuid.UUID, steps: range, shift: float = 0.0
) -> None:
    metrics, traces = [], []
    for s in steps:
        value = _value(s, shift)
        value = {1234: 99.0, 2789: -5.0, 3001: math.nan}.get(s, value)
        metrics.append({"split": "train", "name": "loss", "step": s, "epoch": 1, "value": value})
        for layer, phase in (("fc1", 0.0), ("fc2", 1.0)):
            traces.append({
                "step": s, "layer": layer, "kind": "param_grad", "numel": 4,
                "norm": value + phase, "mean": _value(s, phase + 2) if s % 10 == 0 else None,
                "zero_frac": _value(s, phase + 3) / 4,
            })  # fmt: skip
    with session_scope(sessions) as session:
        repository.record_metrics(session=session, job_id=job_id, rows=metrics)
        repository.record_traces(session=session, job_id=job_id, rows=traces)


def _reads(
    sessions: sessionmaker[Session],
    job_id: uuid.UUID,
    max_points: int,
    stats: tuple[str, ...] = STATS,
) -> dict[str, Any]:
    """Every thinned read the API and the plots make, as comparable values."""
    found: dict[str, Any] = {}
    with sessions() as session:
        metrics = repository.list_metrics(
            session=session, job_id=job_id, limit=100_000, max_points=max_points
        )
        found["metrics"] = [(r.split, r.name, r.step, repr(r.value)) for r in metrics]
        for stat in stats:
            traces = repository.list_traces(
                session=session, job_id=job_id, kind="param_grad", limit=100_000,
                max_points=max_points, stat=stat,
            )  # fmt: skip
            found[stat] = [(r.layer, r.step, repr(getattr(r, stat))) for r in traces]
    return found


def _roll(
    sessions: sessionmaker[Session], job_id: uuid.UUID, through: int, keep: int | None = None
) -> repository.RollResult:
    with session_scope(sessions) as session:
        return repository.roll_up(
            session=session, job_id=job_id, through_step=through, keep_raw_steps=keep
        )


def test_reads_from_aligned_rollups_equal_reads_of_the_raw_rows(
    db: sessionmaker[Session],
) -> None:
    # Steps 0..6399 in 32 thinning buckets of 200 steps: level-1 rollups are exactly the
    # thinning buckets, so the rows kept must be the very same (`mean`, every 10th step,
    # spans 6391 steps: not aligned, left out).
    job_id = _job(db, range(0, 6400))
    raw = _reads(db, job_id, max_points=32, stats=("norm", "zero_frac"))
    rolled = _roll(db, job_id, through=6400)
    assert rolled.rolled_below == 6400
    assert _reads(db, job_id, max_points=32, stats=("norm", "zero_frac")) == raw
    with db() as session:
        for model in (TraceRollup, MetricRollup):
            top = session.scalar(select(func.max(model.level)).where(model.job_id == job_id))
            assert top is not None and width(top) <= 6400 < width(top + 1)  # every level


def test_a_rolled_up_read_keeps_first_last_extremes_and_nan(db: sessionmaker[Session]) -> None:
    job_id = _job(db, range(1, 5001))
    _roll(db, job_id, through=4950)  # the last 50 steps are not rolled up yet
    with db() as session:
        rows = repository.list_metrics(session=session, job_id=job_id, limit=1000, max_points=20)
        traces = repository.list_traces(
            session=session, job_id=job_id, layer="fc1", kind="param_grad", limit=1000,
            max_points=20,
        )  # fmt: skip
    for series, value in ((rows, "value"), (traces, "norm")):
        steps = [r.step for r in series]
        assert steps == sorted(set(steps)) and len(steps) <= 3 * 20 + 1
        by_step = {r.step: getattr(r, value) for r in series}
        assert steps[0] == 1 and steps[-1] == 5000
        assert by_step[1234] == 99.0 and by_step[2789] == -5.0 and math.isnan(by_step[3001])
        assert {(s - 1) * 20 // 5000 for s in steps} == set(range(20))


def test_retention_thins_old_raw_rows_and_reads_stay_the_same(db: sessionmaker[Session]) -> None:
    job_id = _job(db, range(1, 5001))
    _roll(db, job_id, through=5000)
    before = {points: _reads(db, job_id, points) for points in (8, 20)}
    result = _roll(db, job_id, through=5000, keep=1000)
    assert result.pruned_below == 4000 and result.rows_pruned > 0
    with db() as session:

        def count(*where: Any) -> int:
            return (
                session.scalar(
                    select(func.count())
                    .select_from(LayerTrace)
                    .where(LayerTrace.job_id == job_id, *where)
                )
                or 0
            )

        assert count(LayerTrace.step >= 4000) == 2 * 1001  # the last 1000 steps stay whole
        old = count(LayerTrace.step < 4000)
        # At most first + lowest + highest of each of the three stats per 100 steps.
        assert old <= 2 * 40 * 7 and old < 2 * 3999 / 10
    # What a thinned read (and so a plot) shows does not change.
    assert {points: _reads(db, job_id, points) for points in (8, 20)} == before
    # Pruning again prunes nothing more; rolling further moves both marks.
    assert _roll(db, job_id, through=5000, keep=1000).rows_pruned == 0
    _write(db, job_id, range(5001, 5301))
    again = _roll(db, job_id, through=5300, keep=1000)
    assert (again.rolled_below, again.pruned_below) == (5300, 4300)


def test_a_resumed_attempt_rewrites_and_rolls_up_its_steps_again(
    db: sessionmaker[Session],
) -> None:
    job_id = _job(db, range(1, 5001))
    _roll(db, job_id, through=5000, keep=2000)
    with session_scope(db) as session:
        repository.delete_rows_after(session=session, job_id=job_id, step=2345)
    with db() as session:
        mark = session.get(RollupMark, job_id)
        assert mark is not None and (mark.rolled_below, mark.pruned_below) == (2300, 2300)
        for model in (TraceRollup, MetricRollup):
            ends = session.execute(
                select(model.level, func.max(model.bucket)).where(model.job_id == job_id)
                .group_by(model.level)
            ).all()  # fmt: skip
            assert ends and all((bucket + 1) * width(level) <= 2300 for level, bucket in ends)
    # The new attempt writes other values from step 2346 on (the spike moved).
    _write(db, job_id, range(2346, 5001), shift=0.5)
    with session_scope(db) as session:
        session.execute(
            LayerTrace.__table__.update()
            .where(LayerTrace.job_id == job_id, LayerTrace.step == 4444, LayerTrace.layer == "fc1")
            .values(norm=500.0)
        )
    _roll(db, job_id, through=5000)
    with db() as session:
        fc1 = repository.list_traces(
            session=session, job_id=job_id, layer="fc1", kind="param_grad", limit=1000,
            max_points=20,
        )  # fmt: skip
    norms = {r.step: r.norm for r in fc1}
    assert norms[4444] == 500.0  # the new attempt's spike, found through its rollups
    for step, norm in norms.items():
        if step > 2345 and step not in (2789, 3001, 4444):
            assert norm == _value(step, 0.5)  # the new attempt's rows, never the old ones
    with db() as session:
        highest = session.scalar(
            select(func.max(TraceRollup.high)).where(
                TraceRollup.job_id == job_id, TraceRollup.layer == "fc1",
                TraceRollup.stat == "norm", TraceRollup.level == 0,
                TraceRollup.bucket == 4444 // BUCKET_STEPS,
            )
        )  # fmt: skip
    assert highest == 500.0
