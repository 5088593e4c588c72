"""Storing a checked job and sending its message: the row exists before the message."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy.orm import Session

from api.context import services
from shared import repository
from shared.models import Job, utcnow
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
    transient = kind == "infer"
    if transient:
        # One short transaction that skips the WAL flush (repository.relax_durability),
        # stamped as sent: the sweeper treats a send that then fails the same way as a
        # message lost later (re-sent once requeue_after_seconds have passed).
        repository.relax_durability(session)
    job = repository.create_job(
        session=session, owner=owner, kind=kind, spec=spec, queue=queue,
        source_job_id=source_job_id, enqueued_at=utcnow() if transient else None,
    )  # fmt: skip
    session.commit()
    try:
        send_job(services().celery, job_id=str(job.id), kind=kind, queue=queue)
        if not transient:
            job.enqueued_at = repository.mark_enqueued(session=session, job_id=job.id)
            session.commit()
    except Exception:
        log.exception("could not send job %s to the broker; the sweeper will retry", job.id)
        session.rollback()
        session.refresh(job)
    return job
