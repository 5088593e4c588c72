"""What a finished training job produced, for comparing two runs of one spec."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.models import Checkpoint, Job, LayerTrace, Metric


def job_outcome(sessions: sessionmaker[Session], job_id: uuid.UUID) -> dict[str, Any]:
    """Everything a finished training job produced that must not depend on how it ran:
    metric and trace rows, the final weights' sha256, the summary's results."""
    with sessions() as session:
        metrics = session.execute(
            select(Metric.split, Metric.name, Metric.step, Metric.epoch, Metric.value)
            .where(Metric.job_id == job_id)
            .order_by(Metric.split, Metric.name, Metric.step)
        ).all()
        traces = session.execute(
            select(LayerTrace.step, LayerTrace.layer, LayerTrace.kind, LayerTrace.norm,
                   LayerTrace.std, LayerTrace.update_ratio)
            .where(LayerTrace.job_id == job_id)
            .order_by(LayerTrace.step, LayerTrace.kind, LayerTrace.layer)
        ).all()  # fmt: skip
        final = session.scalars(
            select(Checkpoint.sha256).where(Checkpoint.job_id == job_id, Checkpoint.tag == "final")
        ).all()
        job = session.get(Job, job_id)
        assert job is not None and job.summary is not None
        return {
            "metrics": [tuple(r) for r in metrics],
            "traces": [tuple(r) for r in traces],
            "final": final,
            "results": (job.summary["metrics"], job.summary["final_loss"], job.summary["steps"]),
        }
