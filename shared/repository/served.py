"""The records of predictions answered on the serving line: `infer` job rows written
after the answers, in batches.

A served prediction is stored as the job `POST /jobs` would have made for it, already
ended (`GET /jobs/<id>`, the job list and SQL see it alike), plus one `served` event.
Writing a batch twice (a retry after a commit whose answer was lost) is a no-op.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.models import Job, JobEvent, JobStatus
from shared.repository.inserts import insert_ignoring_duplicates
from shared.serving import PredictCall


@dataclass(frozen=True, slots=True)
class ServedPrediction:
    """One answered request and what the answer was (predictions or an error line)."""

    call: PredictCall
    answer: dict[str, Any] | None
    error: str | None
    worker: str
    started_at: datetime
    finished_at: datetime
    batch_samples: int  # samples in the forward pass that answered it (dynamic batching)

    def encode(self) -> bytes:
        """JSON (the serving journal keeps records in Redis until they are written),
        by pydantic's serializer: json.dumps of a request's floats costs milliseconds."""
        return _SERVED.dump_json(self)

    @classmethod
    def decode(cls, raw: str | bytes) -> ServedPrediction:
        return _SERVED.validate_json(raw)


_SERVED: TypeAdapter[ServedPrediction] = TypeAdapter(ServedPrediction)


def record_served(*, session: Session, served: Sequence[ServedPrediction]) -> None:
    """Insert the jobs and their events (the caller commits)."""
    if not served:
        return
    # A model job deleted since the request only loses the link (as ON DELETE SET NULL
    # would have done), not the record.
    asked = {s.call.model_job_id for s in served}
    present = set(session.scalars(select(Job.id).where(Job.id.in_(asked))))
    jobs = [_job_row(s, present) for s in served]
    insert_ignoring_duplicates(session, Job.__table__, jobs)  # type: ignore[arg-type]
    # Events only for jobs this call inserted: a retried batch adds none twice.
    ids = [s.call.id for s in served]
    have = set(session.scalars(select(JobEvent.job_id).where(JobEvent.job_id.in_(ids))))
    session.add_all(
        JobEvent(
            job_id=s.call.id,
            at=s.finished_at,
            kind="served",
            message=_event_message(s),
            data={"batch_samples": s.batch_samples, "worker": s.worker},
        )
        for s in served
        if s.call.id not in have
    )


def _job_row(s: ServedPrediction, present: set[uuid.UUID]) -> dict[str, Any]:
    call = s.call
    return {
        "id": call.id,
        "owner": call.owner,
        "kind": "infer",
        "status": str(JobStatus.FAILED if s.error is not None else JobStatus.SUCCEEDED),
        "spec": call.spec(),
        "queue": call.queue,
        "priority": 5,
        "attempt": 1,
        "worker": s.worker,
        "cancel_requested": False,
        "preempt_requested": False,
        "progress_step": 0,
        "progress_epoch": 0,
        "summary": s.answer,
        "error": s.error,
        "source_job_id": call.model_job_id if call.model_job_id in present else None,
        "created_at": call.sent_at,
        "enqueued_at": call.sent_at,
        "started_at": s.started_at,
        "finished_at": s.finished_at,
    }


def _event_message(s: ServedPrediction) -> str:
    waited = (s.started_at - s.call.sent_at).total_seconds() * 1000
    took = (s.finished_at - s.started_at).total_seconds() * 1000
    outcome = "failed" if s.error is not None else "answered"
    return (
        f"{outcome} on the serving line by {s.worker} in {took:.1f} ms after {waited:.1f} ms "
        f"in the queue; a forward pass of {s.batch_samples} samples"
    )
