"""The writer's PostgreSQL path: binary COPY straight in, staging only after a duplicate."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from shared import repository
from shared.db import session_scope
from shared.models import Metric
from tests.support.fixture_types import NewJob
from worker.pgcopy import copy_ignoring_duplicates


def _metric_rows(steps: range) -> list[dict[str, object]]:
    return [
        {"split": "train", "name": "loss", "step": s, "epoch": 1, "value": 1.0 / s} for s in steps
    ]


def test_copy_goes_straight_in_and_falls_back_to_staging_on_duplicates(
    sessions: sessionmaker[Session], new_job: NewJob
) -> None:
    job = new_job()
    table = Metric.__table__

    def copy(rows: list[dict[str, object]], optimistic: bool = True) -> bool:
        with session_scope(sessions) as session:
            return copy_ignoring_duplicates(
                session=session, table=table, job_id=job.id, rows=rows, optimistic=optimistic
            )

    def stored() -> list[int]:
        with sessions() as session:
            rows = repository.list_metrics(session=session, job_id=job.id, limit=1000)
            return [r.step for r in rows]

    assert copy(_metric_rows(range(1, 51))) is False  # all new: the direct COPY
    assert stored() == list(range(1, 51))
    # Half old, half new (a re-delivered job): the savepoint is rolled back, staging
    # stores the new half once, and the transaction goes on.
    assert copy(_metric_rows(range(26, 76))) is True
    assert stored() == list(range(1, 76))
    assert copy(_metric_rows(range(70, 81)), optimistic=False) is True  # staging only
    assert stored() == list(range(1, 81))
