"""Storing a checked job and sending its message: the row exists before the message."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy.orm import Session

from api.context import services
from shared import repository
from shared.models import Job
from shared.queues import send_job

log = logging.getLogger(__name__)


def enqueue(
    *,
    session: Session,
    owner: str,
    kind: str,
    spec: dict[str, Any],
    queue: str,
    source_job_id: uuid.UUID | None = None,
) -> Job:
    """Commit the queued job, then send "work on job X"; a send that fails is left to the
    sweeper (the job stays queued and is re-sent), so the caller still gets its job."""
    job = repository.create_job(
        session=session, owner=owner, kind=kind, spec=spec, queue=queue,
        source_job_id=source_job_id,
    )  # fmt: skip
    session.commit()
    try:
        send_job(services().celery, job_id=str(job.id), kind=kind, queue=queue)
        repository.mark_enqueued(session=session, job_id=job.id)
        session.commit()
    except Exception:
        log.exception("could not send job %s to the broker; the sweeper will retry", job.id)
        session.rollback()
    session.refresh(job)
    return job
