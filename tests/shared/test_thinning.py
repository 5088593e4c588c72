"""Series thinned in the database, on PostgreSQL and on the embedded SQLite default: a
series longer than the row limit keeps its end, its true extremes and its NaN, and at
most 3 x max_points + 1 rows per series come back."""

from __future__ import annotations

import math
import uuid

from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.db import session_scope

POINTS = 5000
MAX_POINTS = 20


def _values() -> dict[int, float]:
    values = {s: 1.0 + math.sin(s / 100) for s in range(1, POINTS + 1)}
    values[1234] = 99.0  # the global maximum
    values[3333] = -5.0  # the global minimum
    values[4000] = math.nan
    return values


def _job(sessions: sessionmaker[Session]) -> uuid.UUID:
    values = _values()
    with session_scope(sessions) as session:
        job = repository.create_job(session=session, owner="o", kind="train", spec={}, queue="t")
        repository.record_metrics(
            session=session,
            job_id=job.id,
            rows=[{"split": "train", "name": "loss", "step": s, "epoch": 1, "value": v}
                  for s, v in values.items()],
        )  # fmt: skip
        repository.record_traces(
            session=session,
            job_id=job.id,
            rows=[{"step": s, "layer": layer, "kind": "param_grad", "numel": 4, "norm": v}
                  for s, v in values.items() for layer in ("fc1", "fc2")],
        )  # fmt: skip
        return job.id


def test_a_thinned_series_keeps_its_end_extremes_and_nan(db: sessionmaker[Session]) -> None:
    job_id = _job(db)
    with db() as session:
        rows = repository.list_metrics(
            session=session, job_id=job_id, limit=1000, max_points=MAX_POINTS
        )
    steps = [r.step for r in rows]
    assert steps == sorted(steps) and len(steps) == len(set(steps))
    assert MAX_POINTS < len(rows) <= 3 * MAX_POINTS + 1  # under the limit: nothing cut
    by_step = {r.step: r.value for r in rows}
    assert steps[0] == 1 and steps[-1] == POINTS  # the first and the last point
    assert by_step[1234] == 99.0 and by_step[3333] == -5.0
    assert math.isnan(by_step[4000])
    # Every bucket of POINTS / MAX_POINTS steps has its first point.
    assert {(s - 1) * MAX_POINTS // POINTS for s in steps} == set(range(MAX_POINTS))


def test_each_trace_series_is_thinned_on_its_own(db: sessionmaker[Session]) -> None:
    job_id = _job(db)
    with db() as session:
        rows = repository.list_traces(
            session=session, job_id=job_id, kind="param_grad", limit=1000, max_points=MAX_POINTS
        )
        unthinned = repository.list_traces(session=session, job_id=job_id, limit=1000)
    for layer in ("fc1", "fc2"):
        mine = [r for r in rows if r.layer == layer]
        assert len(mine) <= 3 * MAX_POINTS + 1
        assert {1, 1234, 3333, 4000, POINTS} <= {r.step for r in mine}
    assert [(r.step, r.kind, r.layer) for r in rows] == sorted(
        (r.step, r.kind, r.layer) for r in rows
    )
    assert len(unthinned) == 1000  # the plain read is still cut by the limit
